use clap::Parser;
use notification_service::{Application, Config};
use service_kit::telemetry::Telemetry;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let telemetry = Telemetry::init(&config.telemetry, "notification-service")?;
    let shutdown = service_kit::shutdown::on_signal();
    let result = async {
        let app = Application::build(config).await?;
        app.run_until_stopped(shutdown).await
    }
    .await;
    if let Err(error) = &result {
        tracing::error!(
            error = format!("{error:#}"),
            "notification service stopped with an error"
        );
    }
    telemetry.shutdown();
    result
}
