//! A deterministic catalogue: venues in real cities, performers, and events with
//! plausible names, descriptions, categories and dates. The same seed gives the
//! same catalogue, so boxoffice and the PostgreSQL peer are loaded with equal data.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// (city, lat, lon)
pub const CITIES: &[(&str, f64, f64)] = &[
    ("London", 51.507, -0.128),
    ("Paris", 48.857, 2.352),
    ("Berlin", 52.520, 13.405),
    ("Madrid", 40.417, -3.704),
    ("Rome", 41.903, 12.496),
    ("Amsterdam", 52.368, 4.904),
    ("Vienna", 48.208, 16.373),
    ("Prague", 50.076, 14.438),
    ("Lisbon", 38.722, -9.139),
    ("Dublin", 53.350, -6.260),
    ("Stockholm", 59.329, 18.069),
    ("Copenhagen", 55.676, 12.568),
    ("Oslo", 59.914, 10.752),
    ("Warsaw", 52.230, 21.012),
    ("Budapest", 47.498, 19.040),
    ("Brussels", 50.850, 4.352),
    ("Zurich", 47.377, 8.542),
    ("Milan", 45.464, 9.190),
    ("Barcelona", 41.385, 2.173),
    ("Munich", 48.135, 11.582),
    ("Hamburg", 53.551, 9.994),
    ("Lyon", 45.764, 4.836),
    ("Manchester", 53.481, -2.243),
    ("Glasgow", 55.864, -4.252),
    ("New York", 40.713, -74.006),
    ("Los Angeles", 34.052, -118.244),
    ("Chicago", 41.878, -87.630),
    ("Houston", 29.760, -95.370),
    ("Phoenix", 33.448, -112.074),
    ("Philadelphia", 39.953, -75.165),
    ("San Antonio", 29.424, -98.494),
    ("San Diego", 32.716, -117.161),
    ("Dallas", 32.777, -96.797),
    ("Austin", 30.267, -97.743),
    ("Seattle", 47.606, -122.332),
    ("Denver", 39.739, -104.990),
    ("Boston", 42.360, -71.059),
    ("Nashville", 36.163, -86.781),
    ("Atlanta", 33.749, -84.388),
    ("Miami", 25.762, -80.192),
    ("Toronto", 43.653, -79.383),
    ("Montreal", 45.502, -73.567),
    ("Vancouver", 49.283, -123.121),
    ("Mexico City", 19.433, -99.133),
    ("Sao Paulo", -23.551, -46.633),
    ("Buenos Aires", -34.604, -58.382),
    ("Sydney", -33.869, 151.209),
    ("Melbourne", -37.814, 144.963),
    ("Tokyo", 35.676, 139.650),
    ("Osaka", 34.694, 135.502),
    ("Seoul", 37.567, 126.978),
    ("Singapore", 1.352, 103.820),
    ("Hong Kong", 22.320, 114.169),
    ("Mumbai", 19.076, 72.878),
    ("Dubai", 25.205, 55.271),
    ("Cape Town", -33.925, 18.424),
    ("Johannesburg", -26.204, 28.047),
    ("Auckland", -36.848, 174.763),
    ("Las Vegas", 36.170, -115.140),
    ("New Orleans", 29.951, -90.072),
];

const VENUE_WORDS: &[&str] = &[
    "Grand",
    "Royal",
    "Riverside",
    "Central",
    "Union",
    "Harbour",
    "Liberty",
    "Crown",
    "Empire",
    "Victoria",
    "Paramount",
    "Apollo",
    "Olympia",
    "Palace",
    "Pavilion",
    "Waterfront",
    "Northside",
    "Summit",
    "Heritage",
    "Coliseum",
];
const VENUE_KINDS: &[&str] = &[
    "Arena",
    "Hall",
    "Theatre",
    "Stadium",
    "Club",
    "Ballroom",
    "Amphitheatre",
    "Opera House",
    "Garden",
    "Dome",
    "Forum",
    "Music Hall",
];
const FIRST: &[&str] = &[
    "Taylor", "Adele", "Bruno", "Billie", "Harry", "Olivia", "Ed", "Dua", "Lana", "Kendrick",
    "Ariana", "Elton", "Stevie", "Norah", "Miles", "Nina", "Ella", "Louis", "Aretha", "Marvin",
    "Joni", "Leonard", "Freddie", "Janis", "Carlos", "Rosalia", "Yuki", "Amara", "Kofi", "Ingrid",
    "Sven", "Matteo", "Chiara", "Pierre", "Camille", "Lukas", "Hannah", "Mateo", "Lucia", "Omar",
];
const LAST: &[&str] = &[
    "Swift",
    "Mars",
    "Styles",
    "Rodrigo",
    "Sheeran",
    "Lipa",
    "Grande",
    "John",
    "Wonder",
    "Jones",
    "Davis",
    "Simone",
    "Fitzgerald",
    "Armstrong",
    "Franklin",
    "Gaye",
    "Mitchell",
    "Cohen",
    "Mercury",
    "Joplin",
    "Santana",
    "Blackwood",
    "Hartley",
    "Moreau",
    "Lindqvist",
    "Okafor",
    "Tanaka",
    "Rossi",
    "Fischer",
    "Novak",
    "Dubois",
    "Castillo",
    "Whitmore",
    "Kowalski",
    "Brennan",
    "Ashford",
    "Delacroix",
    "Marlowe",
    "Sinclair",
    "Valentine",
];
const BAND_ADJ: &[&str] = &[
    "Midnight", "Electric", "Velvet", "Crimson", "Silent", "Golden", "Neon", "Wild", "Lonely",
    "Burning", "Hollow", "Cosmic", "Rusty", "Frozen", "Savage", "Gentle", "Broken", "Lucky",
    "Restless", "Painted",
];
const BAND_NOUN: &[&str] = &[
    "Owls",
    "Wolves",
    "Rivers",
    "Echoes",
    "Pilots",
    "Mirrors",
    "Horses",
    "Lanterns",
    "Shadows",
    "Tigers",
    "Ravens",
    "Saints",
    "Strangers",
    "Engines",
    "Comets",
    "Daughters",
    "Thieves",
    "Kings",
    "Sparrows",
    "Giants",
];
const TEAMS: &[&str] = &[
    "Lions", "Eagles", "Sharks", "Bulls", "Rangers", "United", "City", "Rovers", "Hawks", "Bears",
    "Knights", "Royals", "Titans", "Falcons", "Panthers", "Dragons",
];
/// (category, name suffixes)
const CATEGORIES: &[(&str, &[&str])] = &[
    (
        "concert",
        &[
            "Live",
            "World Tour",
            "in Concert",
            "Unplugged",
            "Farewell Tour",
            "Greatest Hits Tour",
            "Acoustic Night",
        ],
    ),
    (
        "jazz",
        &[
            "Jazz Night",
            "Quartet",
            "Late Set",
            "Blue Note Session",
            "Big Band Evening",
        ],
    ),
    (
        "classical",
        &[
            "Symphony No. 5",
            "Piano Recital",
            "Requiem",
            "Chamber Evening",
            "Violin Concerto",
        ],
    ),
    (
        "comedy",
        &[
            "Stand-Up Special",
            "Comedy Night",
            "Laughs Tour",
            "Work in Progress",
        ],
    ),
    (
        "theatre",
        &[
            "Hamlet",
            "The Tempest",
            "A Doll's House",
            "Cabaret",
            "Les Miserables",
            "Chicago",
            "The Phantom",
        ],
    ),
    (
        "family",
        &[
            "Magic Show",
            "Circus",
            "On Ice",
            "Puppet Theatre",
            "Science Show",
        ],
    ),
    (
        "festival",
        &["Summer Festival", "Weekender", "Open Air", "All-Dayer"],
    ),
    ("sports", &[]),
];
const DESCRIPTIONS: &[&str] = &[
    "An unforgettable evening with",
    "The long-awaited return of",
    "One night only:",
    "Featuring special guests and",
    "A celebration of music and",
    "Direct from a sold-out run,",
    "Intimate performance by",
];

/// Catalogue sizes.
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    pub venues: usize,
    pub performers: usize,
    pub events: usize,
}

/// A generated venue.
#[derive(Clone, Debug)]
pub struct GenVenue {
    pub name: String,
    pub city: &'static str,
    pub lat: f64,
    pub lon: f64,
    /// Some(rows of 20 seats) for seated venues; None for general admission.
    pub seated_rows: Option<u32>,
    pub capacity: u32,
    pub price_cents: u64,
}

/// A generated event; `venue` and `performers` index the generated lists.
#[derive(Clone, Debug)]
pub struct GenEvent {
    pub name: String,
    pub description: String,
    pub category: &'static str,
    pub venue: usize,
    pub performers: Vec<usize>,
    pub starts_at_ms: i64,
}

/// The catalogue's venues and performers, and an event generator.
pub struct Catalogue {
    pub seed: u64,
    pub sizes: Sizes,
    pub venues: Vec<GenVenue>,
    pub performers: Vec<String>,
}

/// 2027-01-01T00:00:00Z
pub const DATES_FROM_MS: i64 = 1_798_761_600_000;
/// Events start within two years of `DATES_FROM_MS`.
pub const DATES_SPAN_MS: i64 = 2 * 365 * 24 * 3600 * 1000;

impl Catalogue {
    pub fn new(seed: u64, sizes: Sizes) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let venues = (0..sizes.venues)
            .map(|i| {
                let (city, lat, lon) = CITIES[rng.gen_range(0..CITIES.len())];
                let seated = rng.gen_bool(0.3);
                let rows = rng.gen_range(5..200u32);
                GenVenue {
                    // The index keeps names unique.
                    name: format!(
                        "{} {} {} {}",
                        city,
                        VENUE_WORDS[rng.gen_range(0..VENUE_WORDS.len())],
                        VENUE_KINDS[rng.gen_range(0..VENUE_KINDS.len())],
                        i + 1
                    ),
                    city,
                    lat: lat + rng.gen_range(-0.15..0.15),
                    lon: lon + rng.gen_range(-0.15..0.15),
                    seated_rows: seated.then_some(rows),
                    capacity: if seated {
                        rows * 20
                    } else {
                        rng.gen_range(100..30_000)
                    },
                    price_cents: rng.gen_range(15..250) * 100,
                }
            })
            .collect();
        let performers = (0..sizes.performers)
            .map(|i| {
                if rng.gen_bool(0.6) {
                    format!(
                        "{} {}",
                        FIRST[rng.gen_range(0..FIRST.len())],
                        LAST[rng.gen_range(0..LAST.len())]
                    )
                } else {
                    let n = i / (BAND_ADJ.len() * BAND_NOUN.len());
                    let base = format!(
                        "The {} {}",
                        BAND_ADJ[rng.gen_range(0..BAND_ADJ.len())],
                        BAND_NOUN[rng.gen_range(0..BAND_NOUN.len())]
                    );
                    if n == 0 {
                        base
                    } else {
                        format!("{base} {}", roman(n + 1))
                    }
                }
            })
            .collect();
        Self {
            seed,
            sizes,
            venues,
            performers,
        }
    }

    /// The events, in creation order (deterministic for the seed).
    pub fn events(&self) -> impl Iterator<Item = GenEvent> + '_ {
        let mut rng = StdRng::seed_from_u64(self.seed ^ 0x9e37_79b9_7f4a_7c15);
        (0..self.sizes.events).map(move |_| {
            let (category, suffixes) = CATEGORIES[rng.gen_range(0..CATEGORIES.len())];
            let venue = rng.gen_range(0..self.venues.len());
            let starts_at_ms =
                DATES_FROM_MS + rng.gen_range(0..DATES_SPAN_MS / 3_600_000) * 3_600_000;
            if category == "sports" {
                let city = self.venues[venue].city;
                let home = TEAMS[rng.gen_range(0..TEAMS.len())];
                let away_city = CITIES[rng.gen_range(0..CITIES.len())].0;
                let away = TEAMS[rng.gen_range(0..TEAMS.len())];
                return GenEvent {
                    name: format!("{city} {home} vs {away_city} {away}"),
                    description: format!("League match at {}", self.venues[venue].name),
                    category,
                    venue,
                    performers: Vec::new(),
                    starts_at_ms,
                };
            }
            let n = if rng.gen_bool(0.8) {
                1
            } else {
                rng.gen_range(2..4)
            };
            let performers: Vec<usize> = (0..n)
                .map(|_| rng.gen_range(0..self.performers.len()))
                .collect();
            let headliner = &self.performers[performers[0]];
            let suffix = suffixes[rng.gen_range(0..suffixes.len())];
            GenEvent {
                name: format!("{headliner} {suffix}"),
                description: format!(
                    "{} {headliner} at {}.",
                    DESCRIPTIONS[rng.gen_range(0..DESCRIPTIONS.len())],
                    self.venues[venue].name
                ),
                category,
                venue,
                performers,
                starts_at_ms,
            }
        })
    }
}

/// RFC 3339 text of a time in ms since the Unix epoch (generated dates only).
pub fn rfc3339(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .expect("generated dates are in range");
    t.format(&time::format_description::well_known::Rfc3339)
        .expect("formatting a valid date")
}

fn roman(mut n: usize) -> String {
    let mut s = String::new();
    for (v, r) in [(10, "X"), (9, "IX"), (5, "V"), (4, "IV"), (1, "I")] {
        while n >= v {
            s.push_str(r);
            n -= v;
        }
    }
    s
}

/// Inserts typos (swap, drop, replace) into `word`, deterministically for `rng`.
pub fn typo(word: &str, rng: &mut StdRng) -> String {
    let mut c: Vec<char> = word.chars().collect();
    if c.len() < 4 {
        return word.to_string();
    }
    let i = rng.gen_range(1..c.len() - 1);
    match rng.gen_range(0..3) {
        0 => c.swap(i, i + 1),
        1 => {
            c.remove(i);
        }
        _ => c[i] = if c[i] == 'e' { 'a' } else { 'e' },
    }
    c.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_catalogue() {
        let sizes = Sizes {
            venues: 50,
            performers: 80,
            events: 500,
        };
        let a = Catalogue::new(7, sizes);
        let b = Catalogue::new(7, sizes);
        let c = Catalogue::new(8, sizes);
        let ea: Vec<String> = a
            .events()
            .map(|e| format!("{}|{}|{}", e.name, e.venue, e.starts_at_ms))
            .collect();
        let eb: Vec<String> = b
            .events()
            .map(|e| format!("{}|{}|{}", e.name, e.venue, e.starts_at_ms))
            .collect();
        let ec: Vec<String> = c
            .events()
            .map(|e| format!("{}|{}|{}", e.name, e.venue, e.starts_at_ms))
            .collect();
        assert_eq!(ea, eb);
        assert_ne!(ea, ec);
        assert_eq!(ea.len(), 500);
        assert_eq!(a.performers, b.performers);
        assert!(a
            .events()
            .all(|e| e.starts_at_ms >= DATES_FROM_MS
                && e.starts_at_ms < DATES_FROM_MS + DATES_SPAN_MS));
        assert!(a
            .events()
            .all(|e| e.venue < 50 && e.performers.iter().all(|&p| p < 80)));
    }

    #[test]
    fn typos_change_the_word_a_little() {
        let mut rng = StdRng::seed_from_u64(1);
        for w in ["taylor", "midnight", "symphony"] {
            let t = typo(w, &mut rng);
            assert_ne!(t, w);
            assert!(t.len().abs_diff(w.len()) <= 1);
        }
    }
}
