//! The fingerprint of a command: what a remembered answer is checked against when
//! an idempotency key comes back, to tell a retry (same command: the first answer
//! again) from a key reused for a different command (`idempotency_key_reused`).
//!
//! It hashes an explicit list of each command's fields, not the command's
//! encoding, so that adding a field to a command (with the evolution rule of
//! [`crate::codec`]) does not change the fingerprint of the commands clients
//! already sent: a retry across an upgrade is still a retry. The fields are
//! written in postcard's encoding behind the first releases' format byte, which
//! makes every fingerprint equal to what those releases stored (the hash of
//! their encoding of the command); `storage/tests/formats.rs` checks it.
//!
//! Adding a field to a command: feed it with [`Fingerprint::put_unless`] after
//! the existing ones, with a tag of its own, so that requests which leave it at
//! the value older requests implied keep their fingerprint (and the tag keeps
//! it from being read as part of a neighbouring field). Adding a command: an arm below (the
//! match has no wildcard, so the compiler asks for it).

use serde::Serialize;

use super::*;

/// A fingerprint being computed: the canonical bytes of a command.
pub struct Fingerprint {
    bytes: Vec<u8>,
}

impl Fingerprint {
    fn new() -> Self {
        // The first releases' format byte, which their fingerprints hashed.
        Fingerprint { bytes: vec![1] }
    }

    /// Feeds a value that never changes shape (numbers, strings, ids, lists of them).
    pub fn put<T: Serialize + ?Sized>(&mut self, value: &T) {
        // Plain data into a Vec: postcard cannot fail here (see `codec::encode`).
        postcard::to_io(value, &mut self.bytes).expect("postcard encoding of an in-memory value");
    }

    /// Feeds a field added after the first releases, unless it has the value a
    /// request without it meant (`implied`). A marker and `tag` (the field's own
    /// number, distinct within its command) go in first, so that the fed value
    /// does not read as more of the field before it.
    pub fn put_unless<T: Serialize + PartialEq>(&mut self, tag: u8, value: &T, implied: &T) {
        if value != implied {
            self.bytes.extend_from_slice(&[0xFF, tag]);
            self.put(value);
        }
    }

    /// Feeds which variant of an enum follows (its declaration index).
    fn variant(&mut self, index: u32) {
        self.put(&index);
    }

    fn finish(self) -> u64 {
        xxhash_rust::xxh3::xxh3_64(&self.bytes)
    }
}

/// Hash of a command's fields, stored with its answer to recognise a reused key.
pub fn fingerprint(command: &Command) -> u64 {
    let mut f = Fingerprint::new();
    command.feed(&mut f);
    f.finish()
}

/// Something that contributes to a fingerprint, field by field.
trait Feed {
    fn feed(&self, f: &mut Fingerprint);
}

impl Feed for Command {
    fn feed(&self, f: &mut Fingerprint) {
        // The indices are the variants' declaration order: postcard's.
        match self {
            Command::CreateVenue(spec) => {
                f.variant(0);
                spec.feed(f);
            }
            Command::CreatePerformer(spec) => {
                f.variant(1);
                f.put(&spec.name);
                f.put(&spec.description);
            }
            Command::CreateEvent(spec) => {
                f.variant(2);
                spec.feed(f);
            }
            Command::CreateInventory(spec) => {
                f.variant(3);
                spec.feed(f);
            }
            Command::Hold(req) => {
                f.variant(4);
                req.feed(f);
            }
            Command::Confirm {
                hold_id,
                user,
                payment_ref,
            } => {
                f.variant(5);
                f.put(hold_id);
                f.put(user);
                f.put(payment_ref);
            }
            Command::Release { hold_id, user } => {
                f.variant(6);
                f.put(hold_id);
                f.put(user);
            }
            Command::Tick => f.variant(7),
            Command::CreateEvents(specs) => {
                f.variant(8);
                f.put(&specs.len());
                specs.iter().for_each(|s| s.feed(f));
            }
            Command::UpdateEvent { event_id, patch } => {
                f.variant(9);
                f.put(event_id);
                f.put(&patch.name);
                f.put(&patch.description);
                f.put(&patch.category);
                f.put(&patch.starts_at_ms);
            }
            Command::CreateInventories(specs) => {
                f.variant(10);
                f.put(&specs.len());
                specs.iter().for_each(|s| s.feed(f));
            }
            Command::Batch(requests) => {
                f.variant(11);
                f.put(&requests.len());
                for r in requests {
                    f.put(&r.stamp_ms);
                    f.put(&r.session);
                    r.command.feed(f);
                }
            }
            Command::EnableFeatures { level } => {
                f.variant(12);
                f.put(level);
            }
            Command::Checkout(c) => {
                f.variant(13);
                f.put(&c.hold_id);
                f.put(&c.user);
                f.put(&c.payment_id);
                f.put(&c.amount_cents);
                f.put(&c.currency);
                f.put(&c.grace_ms);
                f.put(&c.hold_max_ms);
            }
            Command::PaymentSucceeded(n) => {
                f.variant(14);
                n.feed(f);
            }
            Command::PaymentFailed(n) => {
                f.variant(15);
                n.feed(f);
            }
            Command::CancelBooking {
                booking_id,
                user,
                not_after_ms,
            } => {
                f.variant(16);
                f.put(booking_id);
                f.put(user);
                f.put(not_after_ms);
            }
            Command::RefundUpdate {
                payment_id,
                report,
                provider_event,
            } => {
                f.variant(17);
                f.put(payment_id);
                match report {
                    RefundReport::Pending { refund_id } => {
                        f.variant(0);
                        f.put(refund_id);
                    }
                    RefundReport::Succeeded { refund_id } => {
                        f.variant(1);
                        f.put(refund_id);
                    }
                    RefundReport::Failed { reason } => {
                        f.variant(2);
                        f.put(reason);
                    }
                }
                f.put(provider_event);
            }
            Command::SetWebhookEndpoint(s) => {
                f.variant(18);
                f.put(&s.name);
                f.put(&s.url);
                f.put(&s.secret);
                f.put(&s.kinds.iter().map(|k| k.as_str()).collect::<Vec<_>>());
                f.put(&s.enabled);
            }
            Command::DeliveryReport(a) => {
                f.variant(19);
                f.put(&a.endpoint);
                f.put(&a.seq);
                f.put(&a.status);
                f.put(&a.delivered);
            }
            Command::ReplayDelivery { endpoint, seq } => {
                f.variant(20);
                f.put(endpoint);
                f.put(seq);
            }
            Command::SetEventPayments { event_id, settings } => {
                f.variant(21);
                f.put(event_id);
                f.put(&settings.payment_grace_s);
                f.put(&settings.payment_hold_max_s);
                f.put(&settings.cancel_cutoff_s);
            }
            Command::SetQueue {
                event_id,
                spec,
                seed,
            } => {
                f.variant(22);
                f.put(event_id);
                f.put(&spec.prequeue_opens_at_ms);
                f.put(&spec.sale_starts_at_ms);
                f.put(&spec.admit_per_minute);
                f.put(&spec.active_max);
                f.put(&spec.session_ttl_ms);
                f.variant(match spec.order {
                    QueueOrder::RandomPrequeue => 0,
                    QueueOrder::Fifo => 1,
                });
                f.put(seed);
            }
            Command::QueueControl { event_id, action } => {
                f.variant(23);
                f.put(event_id);
                f.variant(match action {
                    QueueAction::Pause => 0,
                    QueueAction::Resume => 1,
                    QueueAction::Close => 2,
                    QueueAction::Open => 3,
                });
            }
            Command::JoinQueue { event_id, user } => {
                f.variant(24);
                f.put(event_id);
                f.put(user);
            }
            Command::AdmitQueue { event_id } => {
                f.variant(25);
                f.put(event_id);
            }
            Command::AdmittedHold { hold, ticket } => {
                f.variant(26);
                hold.feed(f);
                f.put(ticket);
            }
            Command::SetPlacement(u) => {
                f.variant(27);
                f.put(&u.replication_factor);
                f.put(&u.nodes.len());
                for n in &u.nodes {
                    f.put(&n.id);
                    f.put(&n.addr);
                    f.put(&n.labels);
                    f.variant(match n.state {
                        NodeStateSpec::Up => 0,
                        NodeStateSpec::Draining => 1,
                        NodeStateSpec::Down => 2,
                    });
                }
                f.put(&u.groups.len());
                for g in &u.groups {
                    f.put(&g.group);
                    f.put(&g.voters);
                    f.put(&g.learners);
                    f.put(&g.epoch);
                }
            }
        }
    }
}

impl Feed for HoldRequest {
    fn feed(&self, f: &mut Fingerprint) {
        f.put(&self.event_id);
        f.put(&self.user);
        match &self.selection {
            Selection::Seats(seats) => {
                f.variant(0);
                f.put(seats);
            }
            Selection::Quantity(q) => {
                f.variant(1);
                f.put(q);
            }
        }
    }
}

impl Feed for PaymentNotice {
    fn feed(&self, f: &mut Fingerprint) {
        f.put(&self.hold_id);
        f.put(&self.payment_id);
        f.put(&self.amount_cents);
        f.put(&self.provider_event);
    }
}

impl Feed for VenueSpec {
    fn feed(&self, f: &mut Fingerprint) {
        f.put(&self.name);
        f.put(&self.city);
        f.put(&self.lat);
        f.put(&self.lon);
        self.layout.feed(f);
    }
}

impl Feed for Layout {
    fn feed(&self, f: &mut Fingerprint) {
        match self {
            Layout::Seated { sections } => {
                f.variant(0);
                f.put(&sections.len());
                for s in sections {
                    f.put(&s.name);
                    f.put(&s.rows.len());
                    for r in &s.rows {
                        f.put(&r.name);
                        f.put(&r.seats);
                        f.put(&r.price_cents);
                    }
                }
            }
            Layout::GeneralAdmission {
                capacity,
                price_cents,
            } => {
                f.variant(1);
                f.put(capacity);
                f.put(price_cents);
            }
        }
    }
}

impl Feed for EventSpec {
    fn feed(&self, f: &mut Fingerprint) {
        f.put(&self.name);
        f.put(&self.description);
        f.put(&self.category);
        f.put(&self.venue_id);
        f.put(&self.performer_ids);
        f.put(&self.starts_at_ms);
        f.put(&self.hold_ttl_ms);
        f.put(&self.per_user_cap);
    }
}

impl Feed for InventorySpec {
    fn feed(&self, f: &mut Fingerprint) {
        f.put(&self.event_id);
        self.layout.feed(f);
        f.put(&self.hold_ttl_ms);
        f.put(&self.per_user_cap);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hold(user: &str, seats: Vec<u32>) -> Command {
        Command::Hold(HoldRequest {
            event_id: 7,
            user: user.into(),
            selection: Selection::Seats(seats),
        })
    }

    #[test]
    fn equal_commands_agree_and_different_ones_do_not() {
        assert_eq!(
            fingerprint(&hold("alice", vec![1, 2])),
            fingerprint(&hold("alice", vec![1, 2]))
        );
        assert_ne!(
            fingerprint(&hold("alice", vec![1, 2])),
            fingerprint(&hold("alice", vec![1, 3]))
        );
        assert_ne!(
            fingerprint(&hold("alice", vec![1])),
            fingerprint(&hold("bob", vec![1]))
        );
        assert_ne!(fingerprint(&Command::Tick), fingerprint(&hold("a", vec![])));
    }

    #[test]
    fn a_field_left_at_its_implied_value_does_not_move_the_fingerprint() {
        // As a command gaining `note: Option<String>` would feed it.
        let base = {
            let mut f = Fingerprint::new();
            hold("alice", vec![1]).feed(&mut f);
            f.finish()
        };
        let with = |note: Option<&str>| {
            let mut f = Fingerprint::new();
            hold("alice", vec![1]).feed(&mut f);
            f.put_unless(1, &note.map(str::to_string), &None);
            f.finish()
        };
        assert_eq!(with(None), base);
        assert_ne!(with(Some("gift")), base);
    }
}
