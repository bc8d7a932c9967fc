//! Percentiles and small report helpers.

/// The p-quantile (0..=1) of sorted samples, nearest-rank; 0 when empty.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The median of `v` (mean of the middle two when even); NaN when empty.
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// What [`run_workers`] measured: (label, latency µs) per success, wall time,
/// failures.
pub struct Samples<K> {
    pub latencies: Vec<(K, u64)>,
    pub secs: f64,
    pub errors: u64,
}

/// Runs `workers` concurrent loops; worker `w` runs operations `w`, `w + workers`,
/// ... below `total` until `time_limit` passes. `op(worker, i)` returns the label
/// its latency is filed under; failures are counted and the first few printed.
pub async fn run_workers<K, F, Fut>(
    workers: usize,
    total: usize,
    time_limit: std::time::Duration,
    op: F,
) -> Samples<K>
where
    K: Send + 'static,
    F: Fn(usize, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<K>> + Send,
{
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Instant;
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + time_limit;
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (latencies, errors, op) = (latencies.clone(), errors.clone(), op.clone());
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            let mut i = w;
            while i < total && Instant::now() < deadline {
                let t = Instant::now();
                match op(w, i).await {
                    Ok(k) => mine.push((k, t.elapsed().as_micros() as u64)),
                    Err(e) => {
                        if errors.fetch_add(1, Ordering::Relaxed) < 3 {
                            eprintln!("operation failed: {e:#}");
                        }
                    }
                }
                i += workers;
            }
            latencies
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(mine);
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let secs = start.elapsed().as_secs_f64();
    let latencies = std::mem::take(&mut *latencies.lock().unwrap_or_else(|e| e.into_inner()));
    Samples {
        latencies,
        secs,
        errors: errors.load(Ordering::Relaxed),
    }
}

/// Latency summary of microsecond samples.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Summary {
    pub count: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
}

pub fn summarize(mut micros: Vec<u64>) -> Summary {
    micros.sort_unstable();
    let ms = |p| percentile(&micros, p) as f64 / 1e3;
    Summary {
        count: micros.len(),
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.5), 50);
        assert_eq!(percentile(&v, 0.99), 99);
        assert_eq!(percentile(&v, 0.999), 100);
        assert_eq!(percentile(&v, 0.0), 1);
        assert_eq!(percentile(&v, 1.0), 100);
        assert_eq!(percentile(&[7], 0.99), 7);
        assert_eq!(percentile(&[], 0.5), 0);
        let s = summarize(vec![3000, 1000, 2000]);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(vec![f64::INFINITY, 1.0, 2.0]), 2.0);
        assert!(median(vec![]).is_nan());
        assert_eq!((s.count, s.p50_ms, s.p99_ms), (3, 2.0, 3.0));
    }
}
