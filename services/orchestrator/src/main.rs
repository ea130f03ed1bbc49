use clap::Parser;
use orchestrator::{Application, Config};
use service_kit::telemetry::Telemetry;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let telemetry = Telemetry::init(&config.telemetry, "orchestrator")?;
    let shutdown = service_kit::shutdown::on_signal();
    let result = async {
        let app = Application::build(config).await?;
        app.run_until_stopped(shutdown).await
    }
    .await;
    if let Err(error) = &result {
        tracing::error!(
            error = format!("{error:#}"),
            "orchestrator stopped with an error"
        );
    }
    telemetry.shutdown();
    result
}
