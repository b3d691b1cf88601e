//! Compiles the etcd .proto files with protox (pure Rust), so building synod
//! needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/mvccpb.proto",
        "proto/authpb.proto",
        "proto/etcdserverpb.proto",
        "proto/synodpb.proto",
        "proto/peerpb.proto",
        "proto/v3lockpb.proto",
        "proto/v3electionpb.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    let grpc = std::env::var_os("CARGO_FEATURE_GRPC").is_some();
    tonic_prost_build::configure()
        .build_server(grpc)
        .build_client(grpc)
        .bytes(".")
        .compile_fds(descriptors)?;
    Ok(())
}
