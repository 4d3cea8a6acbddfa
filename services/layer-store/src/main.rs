#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    berth_bus::host::run_standalone("layer-store", berth_layer_store::run).await
}
