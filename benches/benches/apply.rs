//! Micro-benchmarks of the booking state machine on a real RocksDB, without HTTP
//! or Raft: what one replica spends applying the on-sale's holds and confirms, and
//! rendering a section's seat map from its applied state.
//!
//! `cargo bench --workspace --bench apply` (`-- --quick` for a short run). Each
//! apply iteration is one log entry of [`BATCH`] requests, as the proposer batches
//! them under load: confirms of the previous entry's holds, then new holds of 1–4
//! seats, on a 50,000-seat event (a new event when one sells out). First, three
//! such sales apply entries in turn and the medians are printed side by side:
//! feature level 0 and the newest level (level 1 counts each user's sessions
//! and keeps them in another index) with the records in RocksDB, and the
//! newest level with them in memory (`storage.state_machine`, the default);
//! then criterion measures the last.

use std::time::{Duration, Instant};

use boxoffice_node::api::seats;
use boxoffice_raft::command::*;
use boxoffice_raft::GroupId;
use boxoffice_storage::read::Reader;
use boxoffice_storage::{Db, StateMachineBackend, StateMachineStore, StorageSettings};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use openraft::storage::RaftStateMachine;

const GROUP: GroupId = GroupId(1);
/// Requests per log entry (half confirms, half holds).
const BATCH: usize = 64;
/// Seats per row and rows of the venue: 1,000 rows of 50, sections of 100 rows.
const ROW_SEATS: u32 = 50;
const ROWS: u32 = 1000;
const SEATS: u32 = ROW_SEATS * ROWS;
/// Distinct buyers (users with a per-user cap record each). Enough that none
/// reaches `USER_SESSIONS_MAX` live sessions within a run (state-machine time
/// moves 5 ms an entry, so no session ends).
const BUYERS: u64 = 4096;
/// State-machine time between entries.
const STEP_MS: u64 = 5;
const T0: u64 = 1_800_000_000_000;

fn layout() -> Layout {
    Layout::Seated {
        sections: (0..ROWS / 100)
            .map(|s| SectionSpec {
                name: format!("S{s}"),
                rows: (s * 100..s * 100 + 100)
                    .map(|r| RowSpec {
                        name: format!("R{r}"),
                        seats: ROW_SEATS,
                        price_cents: 5000,
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// One replica's state machine with an event on sale.
struct Sale {
    sm: StateMachineStore,
    reader: Reader,
    _dir: tempfile::TempDir,
    index: u64,
    time: u64,
    event: u64,
    next_seat: u32,
    next_key: u64,
    /// Holds granted by the last entry (with their buyer), to confirm in the next one.
    to_confirm: Vec<(HoldId, String)>,
}

impl Sale {
    async fn new(level: u32, backend: StateMachineBackend) -> Sale {
        let dir = tempfile::tempdir().expect("temp dir");
        let settings = StorageSettings {
            state_machine: backend,
            ..Default::default()
        };
        let db = Db::open(dir.path(), &settings).expect("open RocksDB");
        let sm = StateMachineStore::open(db, GROUP, &dir.path().join("snap"), &settings)
            .expect("open state machine");
        let mut s = Sale {
            reader: sm.reader(),
            sm,
            _dir: dir,
            index: 0,
            time: T0,
            event: 0,
            next_seat: SEATS,
            next_key: 0,
            to_confirm: Vec::new(),
        };
        let out = s
            .apply(Request {
                stamp_ms: T0,
                session: None,
                command: Command::EnableFeatures { level },
            })
            .await;
        assert!(out.result.is_ok(), "{out:?}");
        s.new_event().await;
        s
    }

    async fn apply(&mut self, req: Request) -> Outcome {
        self.index += 1;
        let entry = boxoffice_storage::testing::normal(self.index, req);
        let mut out = self.sm.apply([entry]).await.expect("apply");
        out.pop().expect("one outcome per entry")
    }

    async fn new_event(&mut self) {
        self.event += 1;
        let out = self
            .apply(Request {
                stamp_ms: self.time,
                session: None,
                command: Command::CreateInventory(InventorySpec {
                    event_id: self.event,
                    layout: layout(),
                    hold_ttl_ms: 120_000,
                    per_user_cap: SEATS + 4,
                }),
            })
            .await;
        assert!(out.result.is_ok(), "{out:?}");
        self.next_seat = 0;
        self.to_confirm.clear();
    }

    fn session(&mut self, user: &str) -> Option<Session> {
        self.next_key += 1;
        Some(Session {
            client_id: user.into(),
            idempotency_key: format!("k{}", self.next_key),
        })
    }

    /// The next entry: confirms of the last entry's holds, then new holds.
    fn next_batch(&mut self) -> Request {
        self.time += STEP_MS;
        let mut reqs = Vec::with_capacity(BATCH);
        for (hold_id, user) in std::mem::take(&mut self.to_confirm) {
            let session = self.session(&user);
            reqs.push(Request {
                stamp_ms: self.time,
                session,
                command: Command::Confirm {
                    hold_id,
                    user,
                    payment_ref: "bench".into(),
                },
            });
        }
        while reqs.len() < BATCH && self.next_seat < SEATS {
            let n = 1 + (self.next_key % 4) as u32;
            let seats: Vec<u32> = (self.next_seat..(self.next_seat + n).min(SEATS)).collect();
            self.next_seat += n;
            let user = format!("buyer-{}", self.next_key % BUYERS);
            let session = self.session(&user);
            reqs.push(Request {
                stamp_ms: self.time,
                session,
                command: Command::Hold(HoldRequest {
                    event_id: self.event,
                    user,
                    selection: Selection::Seats(seats),
                }),
            });
        }
        Request {
            stamp_ms: self.time,
            session: None,
            command: Command::Batch(reqs),
        }
    }

    /// Applies one entry of the sale; the number of requests in it.
    async fn step(&mut self) -> usize {
        if self.next_seat >= SEATS && self.to_confirm.is_empty() {
            self.new_event().await;
        }
        let batch = self.next_batch();
        // `next_batch` makes batch entries only.
        let Command::Batch(reqs) = batch.command.clone() else {
            panic!("the sale proposes batch entries");
        };
        let n = reqs.len();
        let out = self.apply(batch).await;
        let Ok(Effect::Batch(outcomes)) = out.result else {
            panic!("a batch entry answered {out:?}");
        };
        for (o, req) in outcomes.into_iter().zip(reqs) {
            match o.result {
                Ok(Effect::Held(h)) => {
                    let Command::Hold(hold) = req.command else {
                        panic!("a hold answered for another command");
                    };
                    self.to_confirm.push((h.hold_id, hold.user));
                }
                // Confirms of the previous entry's holds.
                Ok(Effect::Confirmed(_)) => {}
                Ok(other) => panic!("the sale's requests hold and confirm, not {other:?}"),
                Err(e) => panic!("request refused in the benchmark's sale: {e:?}"),
            }
        }
        n
    }
}

/// True under `-- --quick`.
fn quick() -> bool {
    std::env::args().any(|a| a == "--quick")
}

fn apply(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // The machines side by side, applying entries in turn, so that each sees
    // the same machine at the same moment: feature level 0 and the newest
    // level with the records in RocksDB, and the newest level with them in
    // memory (the default).
    let configs = [
        (0, StateMachineBackend::Rocksdb),
        (FEATURE_LEVEL_MAX, StateMachineBackend::Rocksdb),
        (FEATURE_LEVEL_MAX, StateMachineBackend::Memory),
    ];
    let mut sales = rt.block_on(async {
        let mut sales = Vec::new();
        for (level, backend) in configs {
            let mut s = Sale::new(level, backend).await;
            // Warm up past the first memtable's growth, as a node well into a sale is.
            for _ in 0..2_000 {
                s.step().await;
            }
            sales.push(s);
        }
        sales
    });
    let rounds = if quick() { 1_000 } else { 5_000 };
    let mut spent: Vec<Vec<Duration>> = vec![Vec::new(); configs.len()];
    rt.block_on(async {
        for round in 0..rounds {
            // Rotate which goes first, so none always follows another.
            for i in 0..configs.len() {
                let k = (round + i) % configs.len();
                let t = Instant::now();
                sales[k].step().await;
                spent[k].push(t.elapsed());
            }
        }
    });
    let medians: Vec<Duration> = spent
        .iter_mut()
        .map(|v| {
            v.sort();
            v[v.len() / 2]
        })
        .collect();
    // The newest level in RocksDB is what the others are compared with.
    let base = medians[1].as_secs_f64();
    println!("apply, {rounds} entries of {BATCH} requests each, in turn (median per entry):");
    for ((level, backend), m) in configs.iter().zip(&medians) {
        println!(
            "  feature level {level}, records in {backend:?}: {:.0} µs per entry, {:.1} µs per request ({:.2} × level {FEATURE_LEVEL_MAX} in Rocksdb)",
            m.as_secs_f64() * 1e6,
            m.as_secs_f64() * 1e6 / BATCH as f64,
            m.as_secs_f64() / base
        );
    }

    let mut sale = sales.pop().expect("the newest level's sale in memory");
    let mut g = c.benchmark_group("apply");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("entry of 32 confirms + 32 holds", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    sale.step().await;
                    spent += t.elapsed();
                }
                spent
            })
        })
    });
    g.finish();

    // A section's map half-way through a sale: per-seat and compact views, as the
    // node serializes them.
    rt.block_on(async {
        sale.new_event().await;
        while sale.next_seat < SEATS / 2 {
            sale.step().await;
        }
    });
    let mut g = c.benchmark_group("seat map of a 5,000-seat section");
    g.throughput(Throughput::Elements(1));
    let event = sale.event;
    g.bench_function("per seat (view=seats)", |b| {
        b.iter(|| {
            let tx = sale.reader.begin_applied();
            let map = seats::seat_map(&tx, GROUP, event, Some("S2")).expect("event exists");
            serde_json::to_vec(&map).expect("serializable").len()
        })
    });
    g.bench_function("rows (view=rows)", |b| {
        b.iter(|| {
            let tx = sale.reader.begin_applied();
            let map = seats::seat_rows(&tx, GROUP, event, Some("S2")).expect("event exists");
            serde_json::to_vec(&map).expect("serializable").len()
        })
    });
    g.finish();
}

criterion_group!(benches, apply);
criterion_main!(benches);
