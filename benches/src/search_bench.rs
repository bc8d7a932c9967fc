//! Search latency and throughput: a mixed query set run concurrently against every
//! node of a loaded cluster, then the same queries against PostgreSQL full-text
//! search (tsvector + GIN, pg_trgm for typos, earthdistance for geo) loaded with
//! the same generated catalogue, in the same run.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::SinkExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::catalogue::{rfc3339, typo, Catalogue, CITIES, DATES_FROM_MS, DATES_SPAN_MS};
use crate::stats::{run_workers, summarize, Summary};

/// Results per page, both systems.
pub const PAGE_SIZE: usize = 20;
/// Geo queries: radius around a city centre.
pub const GEO_RADIUS_KM: f64 = 25.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Keyword,
    Fuzzy,
    KeywordDate,
    Geo,
    CategoryDate,
    AvailableKeyword,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Keyword,
        Kind::Fuzzy,
        Kind::KeywordDate,
        Kind::Geo,
        Kind::CategoryDate,
        Kind::AvailableKeyword,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Kind::Keyword => "keyword",
            Kind::Fuzzy => "fuzzy keyword",
            Kind::KeywordDate => "keyword + date range",
            Kind::Geo => "geo radius + date sort",
            Kind::CategoryDate => "category + date range",
            Kind::AvailableKeyword => "available_only + keyword",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Query {
    pub kind: Kind,
    /// Keywords as a user typed them.
    pub q: Option<String>,
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub category: Option<&'static str>,
    pub near: Option<(f64, f64)>,
    pub available_only: bool,
    /// Ask for facet counts (category, city, month), as a search page does.
    pub facets: bool,
}

/// A deterministic mixed query set drawn from the catalogue's vocabulary.
pub fn queries(cat: &Catalogue, n: usize, seed: u64) -> Vec<Query> {
    let mut rng = StdRng::seed_from_u64(seed);
    let cats = [
        "concert",
        "jazz",
        "classical",
        "comedy",
        "theatre",
        "family",
        "festival",
        "sports",
    ];
    (0..n)
        .map(|i| {
            let kind = Kind::ALL[i % Kind::ALL.len()];
            let performer = cat.performers[rng.gen_range(0..cat.performers.len())].to_lowercase();
            let words: Vec<&str> = performer.split(' ').filter(|w| *w != "the").collect();
            let word = words[rng.gen_range(0..words.len())].to_string();
            let from = DATES_FROM_MS + rng.gen_range(0..DATES_SPAN_MS / 86_400_000) * 86_400_000;
            let mut q = Query {
                kind,
                q: None,
                from_ms: None,
                to_ms: None,
                category: None,
                near: None,
                available_only: false,
                facets: false,
            };
            match kind {
                Kind::Keyword => q.q = Some(words.join(" ")),
                Kind::Fuzzy => {
                    q.q = Some(
                        words
                            .iter()
                            .map(|w| typo(w, &mut rng))
                            .collect::<Vec<_>>()
                            .join(" "),
                    )
                }
                Kind::KeywordDate => {
                    q.q = Some(word);
                    q.from_ms = Some(from);
                    q.to_ms = Some(from + 30 * 86_400_000);
                }
                Kind::Geo => {
                    let (_, lat, lon) = CITIES[rng.gen_range(0..CITIES.len())];
                    q.near = Some((lat, lon));
                    q.from_ms = Some(from);
                }
                Kind::CategoryDate => {
                    q.category = Some(cats[rng.gen_range(0..cats.len())]);
                    q.from_ms = Some(from);
                    q.to_ms = Some(from + 14 * 86_400_000);
                }
                Kind::AvailableKeyword => {
                    q.q = Some(word);
                    q.available_only = true;
                }
            }
            q
        })
        .collect()
}

impl Query {
    /// The `/v1/search` query string.
    pub fn to_url_query(&self) -> String {
        let mut p: Vec<(String, String)> = vec![("page_size".into(), PAGE_SIZE.to_string())];
        if let Some(q) = &self.q {
            p.push(("q".into(), q.clone()));
        }
        if let Some(f) = self.from_ms {
            p.push(("from".into(), rfc3339(f)));
        }
        if let Some(t) = self.to_ms {
            p.push(("to".into(), rfc3339(t)));
        }
        if let Some(c) = self.category {
            p.push(("category".into(), c.into()));
        }
        if let Some((lat, lon)) = self.near {
            p.push(("lat".into(), lat.to_string()));
            p.push(("lon".into(), lon.to_string()));
            p.push(("radius_km".into(), GEO_RADIUS_KM.to_string()));
        }
        if self.available_only {
            p.push(("available_only".into(), "true".into()));
        }
        if self.q.is_none() {
            p.push(("sort".into(), "date".into()));
        }
        if self.facets {
            p.push(("facets".into(), "category,city,month".into()));
        }
        p.iter()
            .map(|(k, v)| format!("{k}={}", urlencode(v)))
            .collect::<Vec<_>>()
            .join("&")
    }
}

impl Query {
    /// The same query for the client library (`Client::search`).
    pub fn to_search_query(&self) -> boxoffice_client::SearchQuery {
        boxoffice_client::SearchQuery {
            q: self.q.clone(),
            from: self.from_ms.map(rfc3339),
            to: self.to_ms.map(rfc3339),
            category: self.category.map(str::to_string),
            near: self.near.map(|(lat, lon)| (lat, lon, Some(GEO_RADIUS_KM))),
            sort: self
                .q
                .is_none()
                .then_some(boxoffice_client::SearchSort::Date),
            available_only: self.available_only,
            page_size: Some(PAGE_SIZE as u32),
            facets: if self.facets {
                vec!["category".into(), "city".into(), "month".into()]
            } else {
                Vec::new()
            },
            ..Default::default()
        }
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Latencies by kind, and the run's wall time.
pub struct RunResult {
    pub by_kind: BTreeMap<Kind, Summary>,
    pub all: Summary,
    pub qps: f64,
    pub errors: u64,
}

/// Runs `queries` with `workers` concurrent workers until each has run its share
/// of `total` queries or `time_limit` passes. `run` answers one query (Ok = hits).
pub async fn drive<F, Fut>(
    queries: Arc<Vec<Query>>,
    workers: usize,
    total: usize,
    time_limit: Duration,
    run: F,
) -> RunResult
where
    F: Fn(usize, Query) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<u64>> + Send,
{
    let samples = run_workers(workers, total, time_limit, move |w, i| {
        let (q, run) = (queries[i % queries.len()].clone(), run.clone());
        async move {
            let kind = q.kind;
            run(w, q).await.map(|_| kind)
        }
    })
    .await;
    let by_kind = Kind::ALL
        .iter()
        .map(|&k| {
            (
                k,
                summarize(
                    samples
                        .latencies
                        .iter()
                        .filter(|(kk, _)| *kk == k)
                        .map(|(_, l)| *l)
                        .collect(),
                ),
            )
        })
        .collect();
    let all = summarize(samples.latencies.iter().map(|(_, l)| *l).collect());
    RunResult {
        qps: all.count as f64 / samples.secs,
        by_kind,
        all,
        errors: samples.errors,
    }
}

/// One query against a node's `/v1/search`.
pub async fn boxoffice_query(http: &reqwest::Client, addr: &str, q: &Query) -> anyhow::Result<u64> {
    let r = http
        .get(format!("http://{addr}/v1/search?{}", q.to_url_query()))
        .send()
        .await?;
    let status = r.status();
    let v: serde_json::Value = r.json().await?;
    anyhow::ensure!(status.is_success(), "{status}: {v}");
    v["total"].as_u64().context("total")
}

/// What a search box sends while someone types: the first 2 to 12
/// characters of a performer's or (every third) a venue's name, a quarter of
/// them with a typo in a word of four letters or more.
pub fn suggest_queries(cat: &Catalogue, n: usize, seed: u64) -> Vec<String> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5u64);
    (0..n)
        .map(|i| {
            let name = if i % 3 == 2 {
                cat.venues[rng.gen_range(0..cat.venues.len())].name.clone()
            } else {
                cat.performers[rng.gen_range(0..cat.performers.len())].clone()
            }
            .to_lowercase();
            let chars: Vec<char> = name.chars().collect();
            let len = rng.gen_range(2..=chars.len().clamp(2, 12));
            let typed: String = chars[..len.min(chars.len())].iter().collect();
            if rng.gen_range(0..4) == 0 {
                typed
                    .split(' ')
                    .map(|w| typo(w, &mut rng))
                    .collect::<Vec<_>>()
                    .join(" ")
            } else {
                typed
            }
        })
        .collect()
}

/// One request to a node's `/v1/search/suggest`; how many suggestions came.
pub async fn boxoffice_suggest(http: &reqwest::Client, addr: &str, q: &str) -> anyhow::Result<u64> {
    let r = http
        .get(format!(
            "http://{addr}/v1/search/suggest?q={}",
            urlencode(q)
        ))
        .send()
        .await?;
    let status = r.status();
    let v: serde_json::Value = r.json().await?;
    anyhow::ensure!(status.is_success(), "{status}: {v}");
    Ok(v["suggestions"].as_array().context("suggestions")?.len() as u64)
}

// ---------------------------------------------------------------- PostgreSQL

const PG_SCHEMA: &str = "
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE EXTENSION IF NOT EXISTS cube;
CREATE EXTENSION IF NOT EXISTS earthdistance;
CREATE TABLE events (
  id bigint PRIMARY KEY, name text NOT NULL, description text NOT NULL, category text NOT NULL,
  performers text NOT NULL, venue_name text NOT NULL, city text NOT NULL, starts_at timestamptz NOT NULL,
  lat float8 NOT NULL, lon float8 NOT NULL, available int NOT NULL, min_price_cents bigint NOT NULL,
  tsv tsvector, search_text text);
";

const PG_INDEXES: &str = "
UPDATE events SET
  tsv = setweight(to_tsvector('simple', name), 'A') || setweight(to_tsvector('simple', performers), 'A')
     || setweight(to_tsvector('simple', venue_name), 'B') || setweight(to_tsvector('simple', description), 'C'),
  search_text = lower(name || ' ' || performers || ' ' || venue_name);
CREATE INDEX events_tsv ON events USING gin (tsv);
CREATE INDEX events_trgm ON events USING gin (search_text gin_trgm_ops);
CREATE INDEX events_starts ON events (starts_at);
CREATE INDEX events_cat_starts ON events (category, starts_at);
CREATE INDEX events_geo ON events USING gist (ll_to_earth(lat, lon));
";

/// A PostgreSQL error with the server's message (its Display says only "db error").
pub fn pg_err(e: tokio_postgres::Error) -> anyhow::Error {
    match e.as_db_error() {
        Some(d) => anyhow::anyhow!("PostgreSQL {}: {}", d.code().code(), d.message()),
        None => e.into(),
    }
}

fn copy_escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('\t', "\\t")
        .replace('\n', "\\n")
        .replace('\r', "\\r")
}

/// Loads the catalogue's events (denormalised, as the search index holds them).
pub async fn pg_load(pg: &tokio_postgres::Client, cat: &Catalogue) -> anyhow::Result<()> {
    pg.batch_execute(PG_SCHEMA).await.map_err(pg_err)?;
    let sink = pg.copy_in("COPY events (id, name, description, category, performers, venue_name, city, starts_at, lat, lon, available, min_price_cents) FROM STDIN").await.map_err(pg_err)?;
    futures::pin_mut!(sink);
    let mut buf = String::new();
    for (i, e) in cat.events().enumerate() {
        let v = &cat.venues[e.venue];
        let performers: Vec<&str> = e
            .performers
            .iter()
            .map(|&p| cat.performers[p].as_str())
            .collect();
        buf.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
            i + 1,
            copy_escape(&e.name),
            copy_escape(&e.description),
            e.category,
            copy_escape(&performers.join(", ")),
            copy_escape(&v.name),
            copy_escape(&v.city.to_lowercase()),
            rfc3339(e.starts_at_ms),
            v.lat,
            v.lon,
            v.capacity,
            v.price_cents
        ));
        if buf.len() > 1 << 20 {
            sink.send(bytes::Bytes::from(std::mem::take(&mut buf)))
                .await
                .map_err(pg_err)?;
        }
    }
    if !buf.is_empty() {
        sink.send(bytes::Bytes::from(buf)).await.map_err(pg_err)?;
    }
    sink.finish().await.map_err(pg_err)?;
    pg.batch_execute(PG_INDEXES).await.map_err(pg_err)?;
    pg.batch_execute("VACUUM ANALYZE events")
        .await
        .map_err(pg_err)?;
    Ok(())
}

fn tsquery(q: &str) -> String {
    let words: Vec<String> = q
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    let n = words.len();
    words
        .into_iter()
        .enumerate()
        .map(|(i, w)| if i + 1 == n { format!("{w}:*") } else { w })
        .collect::<Vec<_>>()
        .join(" & ")
}

const COLS: &str = "id, name, starts_at, venue_name, city, category, min_price_cents, available";

/// One query against PostgreSQL, the way a classic design would write it.
pub async fn pg_query(pg: &tokio_postgres::Client, q: &Query) -> anyhow::Result<u64> {
    let from = q
        .from_ms
        .map(|m| std::time::UNIX_EPOCH + Duration::from_millis(m as u64));
    let to = q
        .to_ms
        .map(|m| std::time::UNIX_EPOCH + Duration::from_millis(m as u64));
    let rows = match q.kind {
        Kind::Keyword | Kind::AvailableKeyword | Kind::KeywordDate => {
            let ts = tsquery(q.q.as_deref().unwrap_or(""));
            let mut sql = format!("SELECT {COLS}, ts_rank(tsv, query) AS score, count(*) OVER () AS total FROM events, to_tsquery('simple', $1) query WHERE tsv @@ query");
            if q.available_only {
                sql.push_str(" AND available > 0");
            }
            if q.kind == Kind::KeywordDate {
                sql.push_str(
                    " AND starts_at >= $2 AND starts_at <= $3 ORDER BY score DESC LIMIT 20",
                );
                pg.query(&sql, &[&ts, &from, &to]).await.map_err(pg_err)?
            } else {
                sql.push_str(" ORDER BY score DESC LIMIT 20");
                pg.query(&sql, &[&ts]).await.map_err(pg_err)?
            }
        }
        Kind::Fuzzy => {
            let text = q.q.clone().unwrap_or_default().to_lowercase();
            pg.query(&format!("SELECT {COLS}, word_similarity($1, search_text) AS score, count(*) OVER () AS total FROM events WHERE $1 <% search_text ORDER BY score DESC LIMIT 20"), &[&text]).await.map_err(pg_err)?
        }
        Kind::Geo => {
            let (lat, lon) = q.near.unwrap_or_default();
            let radius_m = GEO_RADIUS_KM * 1000.0;
            pg.query(
                &format!("SELECT {COLS}, count(*) OVER () AS total FROM events WHERE earth_box(ll_to_earth($1, $2), $3) @> ll_to_earth(lat, lon) AND earth_distance(ll_to_earth($1, $2), ll_to_earth(lat, lon)) <= $3 AND starts_at >= $4 ORDER BY starts_at LIMIT 20"),
                &[&lat, &lon, &radius_m, &from],
            )
            .await.map_err(pg_err)?
        }
        Kind::CategoryDate => {
            let c = q.category.unwrap_or("concert").to_string();
            pg.query(&format!("SELECT {COLS}, count(*) OVER () AS total FROM events WHERE category = $1 AND starts_at >= $2 AND starts_at <= $3 ORDER BY starts_at LIMIT 20"), &[&c, &from, &to]).await.map_err(pg_err)?
        }
    };
    Ok(rows
        .first()
        .map(|r| r.get::<_, i64>("total") as u64)
        .unwrap_or(0))
}

pub fn print_table(title: &str, rows: &[(&str, &RunResult)]) {
    println!("\n### {title}\n");
    print!("| query |");
    for (name, _) in rows {
        print!(" {name} p50 / p99 ms |");
    }
    println!();
    print!("|---|");
    for _ in rows {
        print!("---|");
    }
    println!();
    for k in Kind::ALL {
        print!("| {} |", k.name());
        for (_, r) in rows {
            let s = r.by_kind[&k];
            print!(" {:.2} / {:.2} |", s.p50_ms, s.p99_ms);
        }
        println!();
    }
    print!("| **all** |");
    for (_, r) in rows {
        print!(" {:.2} / {:.2} |", r.all.p50_ms, r.all.p99_ms);
    }
    println!();
    print!("| throughput |");
    for (_, r) in rows {
        print!(
            " {:.0} q/s ({} q, {} errors) |",
            r.qps, r.all.count, r.errors
        );
    }
    println!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::Sizes;

    #[test]
    fn query_set_is_mixed_and_deterministic() {
        let cat = Catalogue::new(
            1,
            Sizes {
                venues: 10,
                performers: 20,
                events: 10,
            },
        );
        let a = queries(&cat, 60, 3);
        let b = queries(&cat, 60, 3);
        assert_eq!(
            a.iter().map(Query::to_url_query).collect::<Vec<_>>(),
            b.iter().map(Query::to_url_query).collect::<Vec<_>>()
        );
        for k in Kind::ALL {
            assert_eq!(a.iter().filter(|q| q.kind == k).count(), 10);
        }
        let geo = a
            .iter()
            .find(|q| q.kind == Kind::Geo)
            .unwrap()
            .to_url_query();
        assert!(
            geo.contains("radius_km=25") && geo.contains("sort=date"),
            "{geo}"
        );
        assert_eq!(tsquery("Taylor  Swift"), "taylor & swift:*");
        assert_eq!(urlencode("a b&c"), "a%20b%26c");
    }
}
