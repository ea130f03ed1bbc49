//! A private single-node Kafka broker (KRaft) for fault tests that kill and
//! restart it without disturbing the shared test broker. It runs from the jars
//! `scripts/infra.sh` installed (`ORDERSAGA_KAFKA_LIBS`).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

pub struct PrivateKafka {
    dir: PathBuf,
    libs: String,
    pub port: u16,
    broker: Option<Child>,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl PrivateKafka {
    pub async fn start() -> anyhow::Result<Self> {
        let libs = std::env::var("ORDERSAGA_KAFKA_LIBS").context(
            "ORDERSAGA_KAFKA_LIBS is unset: run with the environment of `scripts/infra.sh env`",
        )?;
        let dir = std::env::temp_dir().join(crate::unique("ordersaga-kafka"));
        std::fs::create_dir_all(&dir)?;
        let port = free_port()?;
        let controller = free_port()?;
        let properties = format!(
            "process.roles=broker,controller\n\
             node.id=1\n\
             controller.quorum.bootstrap.servers=127.0.0.1:{controller}\n\
             listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}\n\
             advertised.listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}\n\
             controller.listener.names=CONTROLLER\n\
             inter.broker.listener.name=PLAINTEXT\n\
             listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT\n\
             log.dirs={}\n\
             offsets.topic.replication.factor=1\n\
             offsets.topic.num.partitions=1\n\
             transaction.state.log.replication.factor=1\n\
             transaction.state.log.min.isr=1\n\
             share.coordinator.state.topic.replication.factor=1\n\
             share.coordinator.state.topic.min.isr=1\n\
             group.initial.rebalance.delay.ms=0\n\
             auto.create.topics.enable=false\n",
            dir.join("data").display()
        );
        std::fs::write(dir.join("server.properties"), properties)?;
        let mut kafka = Self {
            dir,
            libs,
            port,
            broker: None,
        };
        let cluster_id = kafka.tool(&["kafka.tools.StorageTool", "random-uuid"])?;
        let config = kafka.dir.join("server.properties");
        kafka.tool(&[
            "kafka.tools.StorageTool",
            "format",
            "--standalone",
            "-t",
            cluster_id.trim(),
            "-c",
            &config.to_string_lossy(),
        ])?;
        kafka.resume().await?;
        Ok(kafka)
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn java(&self) -> Command {
        let mut java = Command::new("java");
        java.args([
            "-Xmx384m",
            "-XX:+UseSerialGC",
            "-Djava.net.preferIPv4Stack=true",
            "-cp",
            &format!("{}/*", self.libs),
        ]);
        java
    }

    fn tool(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = self.java().args(args).output().context("cannot run java")?;
        anyhow::ensure!(
            output.status.success(),
            "{} failed: {}",
            args[0],
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Starts the broker and waits until it answers a metadata request.
    pub async fn resume(&mut self) -> anyhow::Result<()> {
        let log = std::fs::File::create(self.dir.join("broker.log"))?;
        let config = self.dir.join("server.properties");
        let child = self
            .java()
            .args(["kafka.Kafka", &config.to_string_lossy()])
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .context("cannot start the private broker")?;
        self.broker = Some(child);
        let probe: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.brokers())
            .create()?;
        crate::eventually(
            Duration::from_secs(90),
            "private Kafka broker",
            async || {
                Ok(probe
                    .fetch_metadata(None, Duration::from_secs(1))
                    .ok()
                    .filter(|m| !m.brokers().is_empty())
                    .map(|_| ()))
            },
        )
        .await
    }

    /// Kills the broker process (SIGKILL), as a crash would.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.broker.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }
}

impl Drop for PrivateKafka {
    fn drop(&mut self) {
        let _ = self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
