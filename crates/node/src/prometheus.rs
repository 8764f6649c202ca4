//! Metrics from outside for rollout analysis: a Prometheus server's instant-query API
//! (`GET /api/v1/query`), asked by the leader when an analysis holding
//! [`PrometheusQuery`](runplane_rollout::PrometheusQuery)s measures.
//!
//! Which queries are due, and what their values mean, is `runplane-rollout`'s; this
//! module only asks and reads the answer. A query's answer is one number: a scalar, or
//! an instant vector of at most one series (none: an empty result, `inconclusive`); a
//! server that cannot be reached, refuses the query, takes longer than the timeout or
//! gives several series is an error the measurement records (`error`, which the
//! analysis's `consecutive_error_limit` counts).

use std::time::Duration;

use runplane_rollout::QueryValue;
use serde::Deserialize;

/// `[rollouts] prometheus_url`, `prometheus_timeout_ms` and `prometheus_token_env`.
#[derive(Debug, Clone)]
pub struct PrometheusSettings {
    /// The server's base address (`http://prometheus:9090`), without `/api/v1`.
    pub url: String,
    pub timeout: Duration,
    /// An environment variable holding a bearer token for the server, if it needs one.
    pub token_env: Option<String>,
}

/// A Prometheus server the rollout controller asks.
pub(crate) struct PrometheusSource {
    endpoint: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl PrometheusSource {
    pub(crate) fn new(s: &PrometheusSettings) -> Result<Self, String> {
        let http = reqwest::Client::builder().timeout(s.timeout).build().map_err(|e| format!("the HTTP client for Prometheus could not be built: {e}"))?;
        let token = match &s.token_env {
            None => None,
            Some(var) => Some(std::env::var(var).map_err(|_| format!("[rollouts] prometheus_token_env names {var}, which is not set; set it to the server's bearer token"))?),
        };
        Ok(PrometheusSource { endpoint: format!("{}/api/v1/query", s.url.trim_end_matches('/')), token, http })
    }

    /// Asks `query` now; the answer or why there is none.
    pub(crate) async fn ask(&self, query: &str) -> QueryValue {
        let answer = async {
            let mut req = self.http.get(&self.endpoint).query(&[("query", query)]);
            if let Some(t) = &self.token {
                req = req.bearer_auth(t);
            }
            let resp = req.send().await.map_err(|e| format!("Prometheus at {} did not answer: {}", self.endpoint, reqwest_reason(&e)))?;
            let status = resp.status();
            let body = resp.bytes().await.map_err(|e| format!("Prometheus at {}: the answer broke off: {e}", self.endpoint))?;
            value_of(status.as_u16(), &body)
        };
        match answer.await {
            Ok(value) => QueryValue { query: query.to_owned(), value, error: None },
            Err(e) => QueryValue { query: query.to_owned(), value: None, error: Some(e) },
        }
    }
}

fn reqwest_reason(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "no answer within the timeout ([rollouts] prometheus_timeout_ms)".into()
    } else if e.is_connect() {
        "the connection was refused or could not be made".into()
    } else {
        e.to_string()
    }
}

#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
}

#[derive(Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
enum Data {
    Scalar((f64, String)),
    Vector(Vec<Series>),
    Matrix(serde::de::IgnoredAny),
    String(serde::de::IgnoredAny),
}

#[derive(Deserialize)]
struct Series {
    #[serde(default)]
    metric: serde_json::Map<String, serde_json::Value>,
    value: (f64, String),
}

/// The number an instant query's answer (HTTP `status`, JSON `body`) holds; `None` for
/// an empty result or NaN.
pub(crate) fn value_of(status: u16, body: &[u8]) -> Result<Option<f64>, String> {
    let answer: Answer = serde_json::from_slice(body).map_err(|e| {
        let shown: String = String::from_utf8_lossy(body).chars().take(200).collect();
        format!("HTTP {status} with an answer that is not Prometheus's query API ({e}): {shown:?}; is prometheus_url the server's base address?")
    })?;
    if answer.status != "success" {
        return Err(format!(
            "the query was refused ({}): {}",
            answer.error_type.as_deref().unwrap_or("error"),
            answer.error.as_deref().unwrap_or("no reason given")
        ));
    }
    let number = |s: &str| match s {
        "NaN" => Ok(None),
        _ => s.parse::<f64>().map(Some).map_err(|_| format!("the value {s:?} is not a number")),
    };
    match answer.data {
        Some(Data::Scalar((_, v))) => number(&v),
        Some(Data::Vector(series)) => match series.as_slice() {
            [] => Ok(None),
            [one] => number(&one.value.1),
            many => {
                let labels: Vec<String> = many.iter().take(3).map(|s| serde_json::Value::Object(s.metric.clone()).to_string()).collect();
                Err(format!("the query gave {} series ({}…); aggregate it to one, with sum(), max() or avg()", many.len(), labels.join(", ")))
            }
        },
        Some(Data::Matrix(_)) => Err("the query gave a range vector; an analysis needs one number (wrap the range in rate(), increase() or avg_over_time())".into()),
        Some(Data::String(_)) => Err("the query gave a string; an analysis needs one number".into()),
        None => Err("the answer holds no data".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::value_of;

    #[test]
    fn answers_become_one_number_or_say_why_not() {
        let ok = |s: &str| value_of(200, s.as_bytes());
        assert_eq!(ok(r#"{"status":"success","data":{"resultType":"scalar","result":[1.5,"0.25"]}}"#), Ok(Some(0.25)));
        assert_eq!(ok(r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1.5,"3"]}]}}"#), Ok(Some(3.0)));
        assert_eq!(ok(r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#), Ok(None), "empty: inconclusive");
        assert_eq!(ok(r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1.5,"NaN"]}]}}"#), Ok(None), "0/0: inconclusive");
        let two = ok(r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"a":"1"},"value":[1,"1"]},{"metric":{"a":"2"},"value":[1,"2"]}]}}"#);
        assert!(two.as_ref().is_err_and(|e| e.contains("2 series") && e.contains("sum()")), "{two:?}");
        let matrix = ok(r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#);
        assert!(matrix.is_err_and(|e| e.contains("range vector")));
        let bad = value_of(400, br#"{"status":"error","errorType":"bad_data","error":"1:5: parse error"}"#);
        assert!(bad.as_ref().is_err_and(|e| e.contains("bad_data") && e.contains("parse error")), "{bad:?}");
        let html = value_of(404, b"<html>not found</html>");
        assert!(html.is_err_and(|e| e.contains("HTTP 404") && e.contains("base address")));
    }
}
