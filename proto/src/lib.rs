//! Generated protobuf types, client and server for `bertsweep.v1` (see
//! `bertsweep/v1/coordinator.proto`). Nothing hand-written lives here except the descriptor
//! set used by gRPC server reflection.

/// Package `bertsweep.v1`.
pub mod v1 {
    tonic::include_proto!("bertsweep.v1");
}

/// Encoded `FileDescriptorSet` of the API, for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("bertsweep_descriptor");
