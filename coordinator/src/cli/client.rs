//! A thin gRPC client for the CLI verbs, turning transport and status errors into one line.

use anyhow::{anyhow, Result};
use bertsweep_proto::auth::BearerToken;
use bertsweep_proto::connect;
use bertsweep_proto::v1 as pb;
use bertsweep_proto::v1::coordinator_client::CoordinatorClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// A connected coordinator client carrying the bearer token.
pub struct Client {
    inner: CoordinatorClient<InterceptedService<Channel, BearerToken>>,
    /// For explaining failures of later calls.
    url: String,
}

/// One line for a failed RPC (bounded: a message never floods the terminal). Transport
/// failures are explained by cause (certificates, TLS against plaintext, unreachable).
pub fn status_error(url: &str, status: Status) -> anyhow::Error {
    let message = &crate::text::bounded(status.message());
    match status.code() {
        // A transport failure: tonic attaches the cause as the status' source, or says only
        // that the call was cancelled when the connection dropped under it.
        Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled
            if std::error::Error::source(&status).is_some()
                || status.message().contains("h2 protocol error")
                || status.code() == Code::Cancelled =>
        {
            let cause = match std::error::Error::source(&status).map(connect::innermost) {
                Some(inner) if inner != status.message() => format!("{}: {inner}", status.message()),
                _ => status.message().to_string(),
            };
            anyhow!("{}", connect::explain_failure(url, &crate::text::bounded(&cause)))
        }
        Code::Unavailable => anyhow!("the coordinator is unavailable: {message}"),
        Code::DeadlineExceeded => anyhow!("the coordinator did not answer in time"),
        _ if message.is_empty() => anyhow!("coordinator error: {:?}", status.code()),
        _ => anyhow!("{message}"),
    }
}

/// Asks the coordinator at `url` for grpc.health.v1 of the coordinator service: Ok("SERVING")
/// or one line saying what is wrong (unreachable, certificate, not serving).
pub async fn health(url: &str, tls: &connect::ClientTls) -> Result<String> {
    use tonic_health::pb::{health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest};
    let endpoint = connect::endpoint(url, tls)?.timeout(std::time::Duration::from_secs(5));
    let channel =
        endpoint.connect().await.map_err(|e| anyhow!("{}", connect::explain_failure(url, &connect::innermost(&e))))?;
    let request = HealthCheckRequest { service: "bertsweep.v1.Coordinator".into() };
    let response = HealthClient::new(channel).check(request).await.map_err(|s| status_error(url, s))?;
    match response.into_inner().status() {
        ServingStatus::Serving => Ok("SERVING".into()),
        other => Err(anyhow!("the coordinator at {url} is not serving ({})", other.as_str_name())),
    }
}

impl Client {
    /// The underlying gRPC client (for blob transfers).
    pub fn raw(&self) -> bertsweep_proto::Client {
        self.inner.clone()
    }

    /// The coordinator URL this client talks to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Connects to `url` (a bare host:port means http://host:port; https:// uses TLS).
    pub async fn connect(url: &str, token: Option<&str>, tls: &connect::ClientTls) -> Result<Self> {
        let endpoint = connect::endpoint(url, tls)?;
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| anyhow!("{}", connect::explain_failure(url, &connect::innermost(&e))))?;
        let auth = BearerToken::new(token)?;
        Ok(Client { inner: CoordinatorClient::with_interceptor(channel, auth), url: url.to_string() })
    }

    pub async fn create_study(&mut self, spec_toml: String) -> Result<pb::Study> {
        Ok(self
            .inner
            .create_study(pb::CreateStudyRequest { spec_toml })
            .await
            .map_err(|s| status_error(&self.url, s))?
            .into_inner())
    }

    /// Every study (in `state` only, when given), page by page.
    pub async fn list_studies(&mut self, state: Option<pb::StudyState>) -> Result<Vec<pb::Study>> {
        let inner = self.inner.clone();
        let state = state.unwrap_or(pb::StudyState::Unspecified) as i32;
        self.all_pages(|page_token| {
            let mut c = inner.clone();
            async move {
                let request = pb::ListStudiesRequest { page_size: 0, page_token, state };
                let page = c.list_studies(request).await?.into_inner();
                Ok((page.studies, page.next_page_token))
            }
        })
        .await
    }

    pub async fn get_study(&mut self, name: &str) -> Result<pb::Study> {
        Ok(self
            .inner
            .get_study(pb::GetStudyRequest { name: name.into() })
            .await
            .map_err(|s| status_error(&self.url, s))?
            .into_inner())
    }

    pub async fn stop_study(&mut self, name: &str) -> Result<pb::Study> {
        Ok(self
            .inner
            .stop_study(pb::StopStudyRequest { name: name.into() })
            .await
            .map_err(|s| status_error(&self.url, s))?
            .into_inner())
    }

    /// Deletes a study (`force`: stopping it first when it runs).
    pub async fn delete_study(&mut self, name: &str, force: bool) -> Result<pb::DeleteStudyResponse> {
        Ok(self
            .inner
            .delete_study(pb::DeleteStudyRequest { name: name.into(), force })
            .await
            .map_err(|s| status_error(&self.url, s))?
            .into_inner())
    }

    /// Starts a backup: the database copy, then its blob list (see [`super::backup`]).
    pub async fn backup(&mut self) -> Result<tonic::Streaming<pb::BackupChunk>> {
        Ok(self.inner.backup(pb::BackupRequest {}).await.map_err(|s| status_error(&self.url, s))?.into_inner())
    }

    /// Every trial of a study in number order, page by page.
    pub async fn list_trials(&mut self, study: &str) -> Result<Vec<pb::Trial>> {
        let inner = self.inner.clone();
        self.all_pages(|page_token| {
            let (mut c, study) = (inner.clone(), study.to_string());
            async move {
                let page = c.list_trials(pb::ListTrialsRequest { study, page_size: 0, page_token }).await?.into_inner();
                Ok((page.trials, page.next_page_token))
            }
        })
        .await
    }

    /// Every configuration of a study, best mean first, page by page.
    pub async fn list_configurations(&mut self, study: &str) -> Result<Vec<pb::Configuration>> {
        let inner = self.inner.clone();
        self.all_pages(|page_token| {
            let (mut c, study) = (inner.clone(), study.to_string());
            async move {
                let request = pb::ListConfigurationsRequest { study, page_size: 0, page_token };
                let page = c.list_configurations(request).await?.into_inner();
                Ok((page.configurations, page.next_page_token))
            }
        })
        .await
    }

    /// Follows `next_page_token` from the first page to the last, collecting the items.
    async fn all_pages<T, F, Fut>(&self, mut fetch: F) -> Result<Vec<T>>
    where
        F: FnMut(String) -> Fut,
        Fut: std::future::Future<Output = Result<(Vec<T>, String), Status>>,
    {
        let mut items = Vec::new();
        let mut page_token = String::new();
        loop {
            let (page, next) = fetch(page_token).await.map_err(|s| status_error(&self.url, s))?;
            items.extend(page);
            if next.is_empty() {
                return Ok(items);
            }
            page_token = next;
        }
    }

    pub async fn best_trial(&mut self, study: &str) -> Result<pb::BestTrial> {
        let best = self
            .inner
            .get_best_trial(pb::GetBestTrialRequest { study: study.into() })
            .await
            .map_err(|s| status_error(&self.url, s))?
            .into_inner();
        if best.trial.is_none() {
            return Err(anyhow!("study {study:?} has no completed trial yet"));
        }
        Ok(best)
    }

    pub async fn watch(&mut self, study: &str) -> Result<tonic::Streaming<pb::TrialEvent>> {
        Ok(self
            .inner
            .watch_study(pb::WatchStudyRequest { study: study.into() })
            .await
            .map_err(|s| status_error(&self.url, s))?
            .into_inner())
    }
}
