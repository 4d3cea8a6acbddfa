#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    berth_bus::host::run_standalone("supervisor", berth_supervisor::run).await
}
