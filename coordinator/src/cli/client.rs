//! A thin gRPC client for the CLI verbs, turning transport and status errors into one line.

use std::time::Duration;

use anyhow::{anyhow, Result};
use bertsweep_proto::v1 as pb;
use bertsweep_proto::v1::coordinator_client::CoordinatorClient;
use bertsweep_proto::auth::BearerToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

/// A connected coordinator client carrying the bearer token.
pub struct Client {
    inner: CoordinatorClient<InterceptedService<Channel, BearerToken>>,
}

/// One line for a failed RPC (bounded: a message never floods the terminal).
pub fn status_error(status: Status) -> anyhow::Error {
    let message = &crate::text::bounded(status.message());
    match status.code() {
        Code::Unavailable => anyhow!("the coordinator is unavailable: {message}"),
        Code::DeadlineExceeded => anyhow!("the coordinator did not answer in time"),
        _ if message.is_empty() => anyhow!("coordinator error: {:?}", status.code()),
        _ => anyhow!("{message}"),
    }
}

impl Client {
    /// Connects to `url` (a bare host:port means http://host:port).
    pub async fn connect(url: &str, token: Option<&str>) -> Result<Self> {
        let url = if url.contains("://") { url.to_string() } else { format!("http://{url}") };
        let endpoint = Endpoint::from_shared(url.clone())
            .map_err(|_| anyhow!("--coordinator {url:?} is not a valid URL; use e.g. http://127.0.0.1:50051"))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        let channel = endpoint.connect().await.map_err(|e| {
            // The innermost cause ("Connection refused") is the useful part.
            let mut cause: &dyn std::error::Error = &e;
            while let Some(next) = cause.source() {
                cause = next;
            }
            let cause = cause.to_string();
            anyhow!(
                "cannot reach the coordinator at {url}: {cause} (is `bertsweep serve` running? set --coordinator or BERTSWEEP_COORDINATOR)"
            )
        })?;
        let auth = BearerToken::new(token)?;
        Ok(Client { inner: CoordinatorClient::with_interceptor(channel, auth) })
    }

    pub async fn create_study(&mut self, spec_toml: String) -> Result<pb::Study> {
        Ok(self.inner.create_study(pb::CreateStudyRequest { spec_toml }).await.map_err(status_error)?.into_inner())
    }

    /// Every study, page by page.
    pub async fn list_studies(&mut self) -> Result<Vec<pb::Study>> {
        let mut studies = Vec::new();
        let mut page_token = String::new();
        loop {
            let request = pb::ListStudiesRequest { page_size: 0, page_token };
            let page = self.inner.list_studies(request).await.map_err(status_error)?.into_inner();
            studies.extend(page.studies);
            if page.next_page_token.is_empty() {
                return Ok(studies);
            }
            page_token = page.next_page_token;
        }
    }

    pub async fn get_study(&mut self, name: &str) -> Result<pb::Study> {
        Ok(self.inner.get_study(pb::GetStudyRequest { name: name.into() }).await.map_err(status_error)?.into_inner())
    }

    pub async fn stop_study(&mut self, name: &str) -> Result<pb::Study> {
        Ok(self.inner.stop_study(pb::StopStudyRequest { name: name.into() }).await.map_err(status_error)?.into_inner())
    }

    /// Every trial of a study in number order, page by page.
    pub async fn list_trials(&mut self, study: &str) -> Result<Vec<pb::Trial>> {
        let mut trials = Vec::new();
        let mut page_token = String::new();
        loop {
            let request = pb::ListTrialsRequest { study: study.into(), page_size: 0, page_token };
            let page = self.inner.list_trials(request).await.map_err(status_error)?.into_inner();
            trials.extend(page.trials);
            if page.next_page_token.is_empty() {
                return Ok(trials);
            }
            page_token = page.next_page_token;
        }
    }

    /// Every configuration of a study, best mean first, page by page.
    pub async fn list_configurations(&mut self, study: &str) -> Result<Vec<pb::Configuration>> {
        let mut configurations = Vec::new();
        let mut page_token = String::new();
        loop {
            let request = pb::ListConfigurationsRequest { study: study.into(), page_size: 0, page_token };
            let page = self.inner.list_configurations(request).await.map_err(status_error)?.into_inner();
            configurations.extend(page.configurations);
            if page.next_page_token.is_empty() {
                return Ok(configurations);
            }
            page_token = page.next_page_token;
        }
    }

    pub async fn best_trial(&mut self, study: &str) -> Result<pb::BestTrial> {
        let best = self.inner.get_best_trial(pb::GetBestTrialRequest { study: study.into() }).await.map_err(status_error)?.into_inner();
        if best.trial.is_none() {
            return Err(anyhow!("study {study:?} has no completed trial yet"));
        }
        Ok(best)
    }

    pub async fn watch(&mut self, study: &str) -> Result<tonic::Streaming<pb::TrialEvent>> {
        Ok(self.inner.watch_study(pb::WatchStudyRequest { study: study.into() }).await.map_err(status_error)?.into_inner())
    }
}
