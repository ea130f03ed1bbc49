use clap::Parser as _;
use loadgen::cli::{Cli, Command};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match execute(cli.command).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("loadgen: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn execute(command: Command) -> anyhow::Result<std::process::ExitCode> {
    match command {
        Command::Seed(args) => {
            let summary =
                loadgen::seed::seed(&args.endpoints, &args.data, args.seed_concurrency).await?;
            println!("seeded: {summary}");
        }
        Command::Run(args) => {
            let report = loadgen::run::run((*args).clone()).await?;
            print!("{}", report.to_text());
            for note in loadgen::run::write_outputs(&args, &report)? {
                println!("{note}");
            }
            if args.fail_on_miss && !report.all_targets_met() {
                return Ok(std::process::ExitCode::from(3));
            }
        }
        Command::Markdown(args) => {
            let mut reports = Vec::new();
            for path in &args.reports {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
                reports.push(
                    serde_json::from_str(&text)
                        .map_err(|e| anyhow::anyhow!("{} is not a report: {e}", path.display()))?,
                );
            }
            print!("{}", loadgen::report::markdown(&reports));
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}
