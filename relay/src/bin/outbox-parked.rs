//! Operator tool: lists a service database's parked outbox rows (rows Kafka
//! refused, and the later rows of their keys held behind them) and re-queues
//! a key once the cause is fixed.
//!
//!   DATABASE_URL=postgres://.../order_db outbox-parked list
//!   DATABASE_URL=postgres://.../order_db outbox-parked requeue 42

use clap::{Parser, Subcommand};
use diesel_async::{AsyncConnection, AsyncPgConnection};

/// Lists and re-queues the parked outbox rows of one service database.
#[derive(Debug, Parser)]
#[command(name = "outbox-parked", version)]
struct Cli {
    /// PostgreSQL URL of the service database whose outbox to inspect.
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Parked rows, oldest first, with Kafka's error.
    List {
        /// Most rows shown.
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Puts a parked row and every parked row of its topic and key back into
    /// the outbox, ahead of newer rows; run it once the cause is fixed.
    Requeue {
        /// The id shown by `list`.
        id: i64,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut conn = AsyncPgConnection::establish(&cli.database_url).await?;
    match cli.command {
        Command::List { limit } => {
            let rows = outbox::parked(&mut conn, limit).await?;
            println!(
                "{:>10}  {:<20}  {:<28}  {:<36}  {:>9}  error",
                "id", "parked at", "topic", "key", "bytes"
            );
            for row in &rows {
                println!(
                    "{:>10}  {:<20}  {:<28}  {:<36}  {:>9}  {}",
                    row.id,
                    row.parked_at.format("%Y-%m-%d %H:%M:%S"),
                    row.topic,
                    row.message_key,
                    row.payload.len(),
                    row.error
                );
            }
            println!("{} parked", rows.len());
        }
        Command::Requeue { id } => {
            let requeued = outbox::requeue(&mut conn, id).await?;
            anyhow::ensure!(requeued > 0, "no parked row {id}");
            println!("{requeued} rows re-queued");
        }
    }
    Ok(())
}
