//! `netloom-bench`: netloom's drivers measured side by side with Docker's built-in drivers on
//! harness hosts (network namespaces with their own dockerd), in one run on one machine.
//! Prints one table, writes it as Markdown and draws the scaling charts (SVG and PNG).
//! Run it with `tests/bench.sh` (as root, after a release build).

mod attach;
mod chart;
mod config;
mod dns;
mod docker_util;
mod driver_cost;
mod endpoint_probe;
mod footprint;
mod report;
mod sections;
mod socket_ops;
mod stats;
mod throughput;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;

use crate::config::{machine_facts, Config};
use crate::report::Report;
use crate::sections::Section;

#[derive(Parser)]
#[command(about = "Benchmarks netloom's drivers against Docker's built-in drivers on harness hosts")]
struct Args {
    /// Where the Markdown table and the charts go.
    #[arg(long, default_value = "target/netloom-bench")]
    out: PathBuf,
    /// Fewer rounds and smaller scales: a smoke run of every section in a few minutes.
    #[arg(long)]
    quick: bool,
    /// Run only these sections (comma-separated); all by default.
    #[arg(long, value_delimiter = ',', value_enum)]
    only: Vec<Section>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("netloom-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Ok(false) when a section failed (its rows are missing; the rest is still written).
fn run(args: &Args) -> Result<bool> {
    netloom_tests::require_root()?;
    chart::load_font()?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let config = Config { quick: args.quick };
    let chosen: Vec<Section> = if args.only.is_empty() { Section::ALL.to_vec() } else { args.only.clone() };
    let preamble = machine_facts(&config, &chosen);
    let mut report = Report::default();
    let mut all_ran = true;
    for section in chosen {
        eprintln!("[bench] === {section:?} ===");
        let started = std::time::Instant::now();
        if let Err(e) = section.run(&config, &mut report) {
            eprintln!("[bench] {section:?} failed: {e:#}");
            report.note(format!("{section:?} failed: {e:#}"));
            all_ran = false;
        }
        eprintln!("[bench] {section:?} took {:.0} s", started.elapsed().as_secs_f64());
    }
    for chart in &report.charts {
        chart.write(&args.out)?;
    }
    let markdown = report.to_markdown("netloom benchmark", &preamble);
    let md_path = args.out.join("report.md");
    std::fs::write(&md_path, markdown).with_context(|| format!("writing {}", md_path.display()))?;
    println!();
    for line in &preamble {
        println!("{line}");
    }
    println!();
    print!("{}", report.to_text());
    println!(
        "\nwritten: {} and {} chart(s) (SVG, PNG) in {}",
        md_path.display(),
        report.charts.len(),
        args.out.display()
    );
    Ok(all_ran)
}
