//! [`Metrics`]: what `/metrics` reports in Prometheus' text format.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The label of a request counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Answer {
    /// The HTTP status answered.
    status: u16,
}

/// The server's counters, shared by every request.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<Answer, Counter>,
    latency: Histogram,
    media_seconds: Counter<f64, AtomicU64>,
    rejected: Counter,
    queued: Gauge,
    running: Gauge,
    batches: Counter,
    batched_windows: Counter,
    /// Serialises the catch-up of the batch counters at render time.
    catching_up: std::sync::Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let mut registry = Registry::with_prefix("mica");
        let requests = Family::<Answer, Counter>::default();
        registry.register(
            "requests",
            "Invocations answered, by HTTP status",
            requests.clone(),
        );
        // 50 ms to about 28 minutes.
        let latency = Histogram::new(exponential_buckets(0.05, 2.0, 16));
        registry.register(
            "request_duration_seconds",
            "Time from an invocation's arrival to its answer",
            latency.clone(),
        );
        let media_seconds = Counter::<f64, AtomicU64>::default();
        registry.register(
            "media_seconds",
            "Seconds of media analysed",
            media_seconds.clone(),
        );
        let rejected = Counter::default();
        registry.register(
            "rejected",
            "Invocations turned away with 429 because the server was full",
            rejected.clone(),
        );
        let queued = Gauge::default();
        registry.register(
            "queue_depth",
            "Admitted invocations waiting for a worker",
            queued.clone(),
        );
        let running = Gauge::default();
        registry.register("running", "Invocations being analysed now", running.clone());
        let batches = Counter::default();
        registry.register(
            "whisper_batches",
            "Batches of Whisper windows decoded together across invocations",
            batches.clone(),
        );
        let batched_windows = Counter::default();
        registry.register(
            "whisper_batched_windows",
            "Whisper windows decoded in those batches (over batches: the mean batch size)",
            batched_windows.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            media_seconds,
            rejected,
            queued,
            running,
            batches,
            batched_windows,
            catching_up: std::sync::Mutex::default(),
        }
    }
}

impl Metrics {
    /// One invocation answered with `status` after `seconds`.
    pub fn answered(&self, status: u16, seconds: f64) {
        self.requests.get_or_create(&Answer { status }).inc();
        self.latency.observe(seconds);
        if status == 429 {
            self.rejected.inc();
        }
    }

    /// `seconds` of media analysed.
    pub fn analysed(&self, seconds: f64) {
        if seconds.is_finite() && seconds > 0.0 {
            self.media_seconds.inc_by(seconds);
        }
    }

    /// The gauge of invocations waiting for a worker.
    pub fn queued(&self) -> &Gauge {
        &self.queued
    }

    /// The gauge of invocations running.
    pub fn running(&self) -> &Gauge {
        &self.running
    }

    /// Everything in Prometheus' text exposition format, the batch counters brought up to
    /// the engine's `batches` first.
    pub fn render(&self, batches: Option<mica::BatchStats>) -> String {
        if let Some(b) = batches {
            let _one = self
                .catching_up
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            self.batches
                .inc_by(b.batches.saturating_sub(self.batches.get()));
            self.batched_windows
                .inc_by(b.windows.saturating_sub(self.batched_windows.get()));
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_show_in_the_text_format() {
        let m = Metrics::default();
        m.answered(200, 0.3);
        m.answered(429, 0.001);
        m.analysed(12.5);
        m.queued().set(3);
        let stats = mica::BatchStats {
            batches: 4,
            windows: 10,
        };
        m.render(Some(stats));
        let text = m.render(Some(stats));
        for line in [
            "mica_requests_total{status=\"200\"} 1",
            "mica_requests_total{status=\"429\"} 1",
            "mica_rejected_total 1",
            "mica_media_seconds_total 12.5",
            "mica_queue_depth 3",
            "mica_request_duration_seconds_count 2",
            "mica_whisper_batches_total 4",
            "mica_whisper_batched_windows_total 10",
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
    }
}
