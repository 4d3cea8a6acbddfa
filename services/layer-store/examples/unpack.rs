//! Unpack one layer blob into a directory with the layer-store's unpacker and print how long
//! it took, to compare with `tar -x` on the same blob:
//! `cargo run --release -p berth-layer-store --example unpack -- BLOB DEST [MEDIA_TYPE]`
//! (DEST must exist and be empty; the compression is sniffed when no media type is given).

use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: {} BLOB DEST [MEDIA_TYPE]", args[0]);
        std::process::exit(2);
    }
    let media_type = args.get(3).map(String::as_str).unwrap_or("");
    let started = Instant::now();
    match berth_layer_store::unpack::unpack(
        std::path::Path::new(&args[1]),
        media_type,
        &args[1],
        std::path::Path::new(&args[2]),
        None,
        Default::default(),
    ) {
        Ok(s) => println!(
            "{} entries, {} bytes uncompressed, {:.3} s",
            s.entries,
            s.uncompressed,
            started.elapsed().as_secs_f64()
        ),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
}
