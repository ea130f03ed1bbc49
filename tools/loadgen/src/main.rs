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
                reports.push(read_report(path)?);
            }
            print!("{}", loadgen::report::markdown(&reports));
        }
        Command::Targets(args) => {
            let report = read_report(&args.report)?;
            let selected: Vec<_> = report
                .targets
                .iter()
                .filter(|t| args.only.is_empty() || args.only.iter().any(|o| t.name.starts_with(o)))
                .collect();
            for t in &selected {
                println!(
                    "{} {} {} (measured {})",
                    if t.met { "met" } else { "missed" },
                    t.name,
                    t.target,
                    t.measured
                );
            }
            if selected.iter().any(|t| !t.met) {
                return Ok(std::process::ExitCode::from(1));
            }
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

fn read_report(path: &std::path::Path) -> anyhow::Result<loadgen::report::Report> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{} is not a report: {e}", path.display()))
}
