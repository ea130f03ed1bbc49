//! Operator tool: lists a service database's dead letters and redrives them.
//!
//!   DATABASE_URL=postgres://.../payment_db dead-letters list
//!   DATABASE_URL=postgres://.../payment_db dead-letters redrive 42

use clap::{Parser, Subcommand};
use diesel_async::{AsyncConnection, AsyncPgConnection};

/// Lists and redrives the dead letters of one service database.
#[derive(Debug, Parser)]
#[command(name = "dead-letters", version)]
struct Cli {
    /// PostgreSQL URL of the service database holding the dead letters.
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Dead letters not yet redriven, oldest first.
    List {
        /// Most rows shown.
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Sends a dead letter back to its source topic (through the outbox) to be handled again.
    Redrive {
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
            let letters = consumer::deadletter::pending(&mut conn, limit).await?;
            println!(
                "{:>6}  {:<20}  {:<28}  {:<36}  reason",
                "id", "at", "source", "key"
            );
            for l in &letters {
                println!(
                    "{:>6}  {:<20}  {:<28}  {:<36}  {}",
                    l.id,
                    l.dead_lettered_at.format("%Y-%m-%d %H:%M:%S"),
                    format!(
                        "{}/{}@{}",
                        l.source_topic, l.source_partition, l.source_offset
                    ),
                    l.message_key,
                    l.reason
                );
            }
            println!("{} pending", letters.len());
        }
        Command::Redrive { id } => {
            consumer::deadletter::redrive(&mut conn, id).await?;
            println!("dead letter {id} redriven");
        }
    }
    Ok(())
}
