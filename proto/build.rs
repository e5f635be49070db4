//! Compiles `bertsweep/v1/coordinator.proto` with the vendored protoc (no system protoc needed)
//! and writes a file-descriptor set for gRPC server reflection.

#[cfg(not(feature = "grpc"))]
fn main() {}

#[cfg(feature = "grpc")]
#[allow(unsafe_code)] // `set_var` below, which edition 2024 makes unsafe
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; the variable is read by prost-build below.
    unsafe { std::env::set_var("PROTOC", protoc) };
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("bertsweep_descriptor.bin"))
        .compile_protos(&["bertsweep/v1/coordinator.proto"], &["."])?;
    println!("cargo:rerun-if-changed=bertsweep/v1/coordinator.proto");
    Ok(())
}
