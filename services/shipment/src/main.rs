use clap::Parser;
use service_kit::telemetry::Telemetry;
use shipment_service::{Application, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let telemetry = Telemetry::init(&config.telemetry, "shipment-service")?;
    let shutdown = service_kit::shutdown::on_signal();
    let result = async {
        let app = Application::build(config).await?;
        app.run_until_stopped(shutdown).await
    }
    .await;
    if let Err(error) = &result {
        tracing::error!(
            error = format!("{error:#}"),
            "shipment service stopped with an error"
        );
    }
    telemetry.shutdown();
    result
}
