//! The benchmark's results: rows of "netloom's figure next to its anchor" (a built-in driver's
//! figure, a bare-kernel limit or a fixed budget), the ratio between them and its target, plus
//! the charts. Rendered as a plain-text table and as Markdown.

use std::fmt::Write as _;

use crate::chart::Chart;
use crate::stats::fmt_num;

/// What the ratio `value / anchor` must satisfy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    AtMost(f64),
    AtLeast(f64),
    /// Shown for information (e.g. the iptables backend's scaling, which has no target).
    None,
}

impl Target {
    fn met(self, ratio: f64) -> Option<bool> {
        match self {
            Target::AtMost(t) => Some(ratio <= t),
            Target::AtLeast(t) => Some(ratio >= t),
            Target::None => None,
        }
    }

    fn label(self) -> String {
        match self {
            Target::AtMost(t) => format!("<= {t}"),
            Target::AtLeast(t) => format!(">= {t}"),
            Target::None => "-".into(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Row {
    pub section: &'static str,
    pub what: String,
    pub value: f64,
    pub unit: &'static str,
    pub anchor_name: String,
    pub anchor: f64,
    pub target: Target,
}

impl Row {
    /// A figure compared with a reference measured in the same run.
    pub fn vs(
        section: &'static str,
        what: impl Into<String>,
        value: f64,
        unit: &'static str,
        anchor_name: impl Into<String>,
        anchor: f64,
        target: Target,
    ) -> Row {
        Row { section, what: what.into(), value, unit, anchor_name: anchor_name.into(), anchor, target }
    }

    /// A figure held against a fixed budget in the same unit (`value / budget <= 1`).
    pub fn budget(section: &'static str, what: impl Into<String>, value: f64, unit: &'static str, budget: f64) -> Row {
        Row::vs(section, what, value, unit, "budget", budget, Target::AtMost(1.0))
    }

    /// A figure without anchor or target, for context.
    pub fn info(section: &'static str, what: impl Into<String>, value: f64, unit: &'static str) -> Row {
        Row::vs(section, what, value, unit, "", f64::NAN, Target::None)
    }

    pub fn ratio(&self) -> f64 {
        self.value / self.anchor
    }

    pub fn verdict(&self) -> &'static str {
        if self.target == Target::None {
            return "info";
        }
        if !self.value.is_finite() || !self.anchor.is_finite() {
            return "n/a";
        }
        match self.target.met(self.ratio()) {
            Some(true) => "ok",
            Some(false) => "MISS",
            None => "info",
        }
    }
}

#[derive(Default)]
pub struct Report {
    pub rows: Vec<Row>,
    pub charts: Vec<Chart>,
    /// Free-form lines printed under the table: set-up facts, skipped parts and why.
    pub notes: Vec<String>,
}

impl Report {
    pub fn push(&mut self, row: Row) {
        self.rows.push(row);
    }

    pub fn note(&mut self, line: impl Into<String>) {
        self.notes.push(line.into());
    }

    fn cells(&self) -> Vec<[String; 7]> {
        self.rows
            .iter()
            .map(|r| {
                [
                    r.section.to_string(),
                    r.what.clone(),
                    format!("{} {}", fmt_num(r.value), r.unit),
                    if r.anchor.is_finite() {
                        format!("{} {} ({})", fmt_num(r.anchor), r.unit, r.anchor_name)
                    } else {
                        "-".into()
                    },
                    fmt_num(r.ratio()),
                    r.target.label(),
                    r.verdict().to_string(),
                ]
            })
            .collect()
    }

    const HEADER: [&'static str; 7] = ["section", "measurement", "netloom", "anchor", "ratio", "target", "verdict"];

    /// Aligned plain text for the terminal.
    pub fn to_text(&self) -> String {
        let cells = self.cells();
        let mut widths = Self::HEADER.map(|h| h.chars().count());
        for row in &cells {
            for (w, c) in widths.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |row: &[String]| -> String {
            let mut s = String::new();
            for (i, (c, w)) in row.iter().zip(widths).enumerate() {
                let pad = w - c.chars().count();
                // Numbers right-aligned, text left-aligned.
                if (2..=5).contains(&i) {
                    s.push_str(&" ".repeat(pad));
                    s.push_str(c);
                } else {
                    s.push_str(c);
                    s.push_str(&" ".repeat(pad));
                }
                s.push_str("  ");
            }
            s.trim_end().to_string() + "\n"
        };
        let mut out = line(&Self::HEADER.map(String::from));
        out.push_str(&line(&widths.map(|w| "-".repeat(w))));
        for row in &cells {
            out.push_str(&line(row));
        }
        for note in &self.notes {
            let _ = writeln!(out, "* {note}");
        }
        out
    }

    /// The same table in Markdown, with the charts linked below it.
    pub fn to_markdown(&self, title: &str, preamble: &[String]) -> String {
        let mut out = format!("# {title}\n\n");
        for line in preamble {
            let _ = writeln!(out, "- {line}");
        }
        if !preamble.is_empty() {
            out.push('\n');
        }
        let _ = writeln!(out, "| {} |", Self::HEADER.join(" | "));
        let _ = writeln!(out, "|{}", "---|".repeat(Self::HEADER.len()));
        for row in self.cells() {
            let row = row.map(|c| c.replace('|', "\\|"));
            let _ = writeln!(out, "| {} |", row.join(" | "));
        }
        if !self.notes.is_empty() {
            out.push('\n');
            for note in &self.notes {
                let _ = writeln!(out, "- {note}");
            }
        }
        if !self.charts.is_empty() {
            out.push_str("\n## Charts\n\n");
            for chart in &self.charts {
                let _ = writeln!(out, "![{}]({}.svg)\n", chart.title, chart.file_stem);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_follow_the_target_direction() {
        let slower = Row::vs("attach", "x", 110.0, "ms", "bridge", 100.0, Target::AtMost(1.05));
        assert_eq!(slower.verdict(), "MISS");
        let faster = Row::vs("attach", "x", 100.0, "ms", "bridge", 100.0, Target::AtMost(1.05));
        assert_eq!(faster.verdict(), "ok");
        let throughput = Row::vs("tput", "x", 9.0, "Gbit/s", "bridge", 10.0, Target::AtLeast(0.95));
        assert_eq!(throughput.verdict(), "MISS");
        assert_eq!(Row::budget("fp", "rss", 12.0, "MB", 15.0).verdict(), "ok");
        assert_eq!(Row::vs("s", "x", 3.0, "ms", "p99 at 10", 1.0, Target::None).verdict(), "info");
        assert_eq!(Row::vs("s", "x", f64::NAN, "ms", "a", 1.0, Target::AtMost(1.0)).verdict(), "n/a");
        assert_eq!(Row::info("s", "x", 2.0, "ms").verdict(), "info");
    }

    #[test]
    fn text_and_markdown_carry_every_row() {
        let mut r = Report::default();
        r.push(Row::vs("attach", "docker run -d p50", 101.0, "ms", "bridge", 100.0, Target::AtMost(1.05)));
        r.push(Row::budget("footprint", "RSS | idle", 9.5, "MB", 15.0));
        r.note("skipped nothing");
        let text = r.to_text();
        assert!(text.contains("docker run -d p50"), "{text}");
        assert!(text.contains("101 ms"), "{text}");
        assert!(text.contains("1.01"), "{text}");
        assert!(text.contains("* skipped nothing"), "{text}");
        let md = r.to_markdown("netloom", &["kernel x".into()]);
        assert!(md.contains("| footprint | RSS \\| idle | 9.50 MB | 15.0 MB (budget) | 0.633 | <= 1 | ok |"), "{md}");
        assert!(md.contains("- kernel x"), "{md}");
    }

    #[test]
    fn numbers_keep_three_digits() {
        assert_eq!(fmt_num(1234.4), "1234");
        assert_eq!(fmt_num(12.345), "12.3");
        assert_eq!(fmt_num(1.2345), "1.23");
        assert_eq!(fmt_num(0.012345), "0.012");
        assert_eq!(fmt_num(f64::NAN), "-");
    }
}
