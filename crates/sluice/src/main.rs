//! The `sluice` binary; all the work is in the library.

fn main() {
    std::process::exit(sluice::cli::main());
}
