use clap::Parser;
use outbox_relay::{Config, Relay};
use service_kit::telemetry::Telemetry;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let telemetry = Telemetry::init(&config.telemetry, "outbox-relay")?;
    let shutdown = service_kit::shutdown::on_signal();
    let result = async {
        let relay = Relay::build(config).await?;
        relay.run_until_stopped(shutdown).await
    }
    .await;
    if let Err(error) = &result {
        tracing::error!(error = format!("{error:#}"), "relay stopped with an error");
    }
    telemetry.shutdown();
    result
}
