//! The `pushbench` binary: parse the command line, run it, turn errors into one line and a
//! non-zero exit. Everything else lives in the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = pushbench::cli::Cli::parse();
    match pushbench::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // One line, the whole cause chain: `{:#}` joins anyhow's contexts with ": ".
            #[allow(clippy::print_stderr)]
            {
                eprintln!("error: {err:#}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}
