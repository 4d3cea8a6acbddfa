#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    berth_bus::host::run_standalone("isolator", berth_isolator::run).await
}
