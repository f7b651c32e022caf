# Sourced by netloom's scripts: strict mode, the repository root as working directory, cargo on
# PATH, and root required (`require_root "<what needs it>"`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ -d "$HOME/.cargo/bin" ]; then export PATH="$HOME/.cargo/bin:$PATH"; fi

require_root() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "$(basename "$0") must run as root: $1" >&2
        exit 1
    fi
}
