//! Generated protobuf types, client and server for `bertsweep.v1` (see
//! `bertsweep/v1/coordinator.proto`), the descriptor set used by gRPC server reflection, and
//! what every client (CLI, worker) shares: the bearer-token interceptor ([`auth`]) and the
//! connection settings — URL, TLS, token files, failure explanations ([`connect`]).

/// Package `bertsweep.v1`.
pub mod v1 {
    tonic::include_proto!("bertsweep.v1");
}

pub mod connect;

/// The client every caller uses: one HTTP/2 connection (clones share it) carrying the bearer
/// token on each call.
pub type Client = v1::coordinator_client::CoordinatorClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, auth::BearerToken>,
>;

/// Client-side authentication.
pub mod auth {
    use tonic::metadata::{Ascii, MetadataValue};
    use tonic::service::Interceptor;
    use tonic::{Request, Status};

    /// The token cannot be sent as a header value.
    #[derive(Debug, thiserror::Error)]
    #[error("the token contains characters that cannot be sent in a header")]
    pub struct BadToken;

    /// Adds `authorization: Bearer <token>` to every call when a token is set.
    #[derive(Clone, Default)]
    pub struct BearerToken(Option<MetadataValue<Ascii>>);

    impl BearerToken {
        /// A token for `--token` / `BERTSWEEP_TOKEN` (None sends no header).
        pub fn new(token: Option<&str>) -> Result<Self, BadToken> {
            match token {
                Some(t) => Ok(BearerToken(Some(MetadataValue::try_from(format!("Bearer {t}")).map_err(|_| BadToken)?))),
                None => Ok(BearerToken(None)),
            }
        }
    }

    impl Interceptor for BearerToken {
        fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
            if let Some(header) = &self.0 {
                request.metadata_mut().insert("authorization", header.clone());
            }
            Ok(request)
        }
    }
}

/// Encoded `FileDescriptorSet` of the API, for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("bertsweep_descriptor");
