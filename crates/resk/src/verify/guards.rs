//! The guards: rule checks that reject a candidate whose question asks the opposite or another
//! thing. Microseconds per pair, no model; they run on every candidate, the sure ones too.
//!
//! What they catch (each a reason label):
//! - `negation`: one question negates and the other does not (`not`, `never`, `without`, `no`,
//!   `non-`, `n't`, `-less` words such as *eggless*; an even number of negations cancels out);
//! - `polarity`: a word in one question is the prefixed opposite of a word in the other
//!   (*available*/*unavailable*, *connect*/*disconnect*, *legal*/*illegal*, *refundable*/
//!   *non-refundable*; prefixes un-, in-, im-, il-, ir-, dis-, de-, non-);
//! - `antonym`: one question says one word of a curated opposite pair and the other the other
//!   (*enable*/*disable*, *upload*/*download*, *increase*/*decrease*, *best*/*worst*,
//!   *on*/*off* …: `data/antonyms.txt`, written for resk, stems compared);
//! - `number`: the numbers differ (digits, `1,000`, `8:15`, number words up to a million,
//!   *half*, *dozen*; `2FA` and *two-factor* agree);
//! - `swap`: each question names a different member of one closed class — plan (Pro vs
//!   Enterprise), OS, device, browser, app, unit, currency, language, weekday, month, file type …
//!   (`data/classes.txt`, extensible per deployment with [`Guards::with_class`]);
//! - `direction`: the same things in the other order: *from A to B* vs *from B to A*, *A to B* vs
//!   *B to A*, *A into B*, *A for B*, *A against B*, or two members of one class in reverse order
//!   (*how many dollars is one euro* vs *how many euros is one dollar*).
//!
//! What they miss: a content word replaced by an unrelated one outside the classes (*password*
//! vs *username*) — token alignment, a cross-encoder or an LLM judge catch that; opposites not in
//! the list and not formed by a prefix; negation by verbs (*refuse*, *fail to*); a paraphrase
//! that adds a negated clause (*my parcel hasn't arrived, where is it?* vs *where is my order?*) is
//! rejected although it asks the same thing (a miss, never a wrong answer).

use std::{
    collections::HashMap,
    sync::{Arc, LazyLock},
};

use resk_core::{Judgement, Pair, Prepared, Result, Verifier, VerifierInfo};

use super::text::{Word, stem, words};

const ANTONYMS: &str = include_str!("../../data/antonyms.txt");
const CLASSES: &str = include_str!("../../data/classes.txt");

/// Prefixes that make an opposite (`available` → `unavailable`).
const PREFIXES: &[&str] = &["non", "dis", "un", "in", "im", "il", "ir", "de"];

/// Markers of direction: `A <marker> B`.
const DIRECTION_MARKERS: &[&str] = &["to", "into", "for", "against", "vs", "versus", "than"];

/// Number words and their values.
const NUMBER_WORDS: &[(&str, f64)] = &[
    ("zero", 0.0),
    ("half", 0.5),
    ("quarter", 0.25),
    ("one", 1.0),
    ("single", 1.0),
    ("two", 2.0),
    ("double", 2.0),
    ("twice", 2.0),
    ("three", 3.0),
    ("triple", 3.0),
    ("four", 4.0),
    ("five", 5.0),
    ("six", 6.0),
    ("seven", 7.0),
    ("eight", 8.0),
    ("nine", 9.0),
    ("ten", 10.0),
    ("eleven", 11.0),
    ("twelve", 12.0),
    ("dozen", 12.0),
    ("thirteen", 13.0),
    ("fourteen", 14.0),
    ("fifteen", 15.0),
    ("sixteen", 16.0),
    ("seventeen", 17.0),
    ("eighteen", 18.0),
    ("nineteen", 19.0),
    ("twenty", 20.0),
    ("thirty", 30.0),
    ("forty", 40.0),
    ("fifty", 50.0),
    ("sixty", 60.0),
    ("seventy", 70.0),
    ("eighty", 80.0),
    ("ninety", 90.0),
    ("hundred", 100.0),
    ("thousand", 1000.0),
    ("million", 1_000_000.0),
];

/// A closed class: its name and its members, each a list of spellings (stemmed word sequences).
#[derive(Debug, Clone)]
struct Class {
    name: String,
    members: Vec<Vec<Vec<String>>>,
}

/// The word lists.
#[derive(Debug)]
struct Lexicon {
    /// Stem → the stems of its opposites.
    antonyms: HashMap<String, Vec<String>>,
    classes: Vec<Class>,
    /// The first stem of every spelling → `(class, member, spelling)` indexes of the spellings
    /// starting with it: a question's words are looked up here instead of every spelling of every
    /// class being tried at every position (the guards run on every semantic candidate).
    first_stems: HashMap<String, Vec<(usize, usize, usize)>>,
}

impl Lexicon {
    fn new(antonyms: HashMap<String, Vec<String>>, classes: Vec<Class>) -> Self {
        let mut first_stems: HashMap<String, Vec<(usize, usize, usize)>> = HashMap::new();
        for (ci, class) in classes.iter().enumerate() {
            for (mi, spellings) in class.members.iter().enumerate() {
                for (si, seq) in spellings.iter().enumerate() {
                    if let Some(first) = seq.first() {
                        first_stems
                            .entry(first.clone())
                            .or_default()
                            .push((ci, mi, si));
                    }
                }
            }
        }
        Self {
            antonyms,
            classes,
            first_stems,
        }
    }
}

fn data_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

fn stems_of(phrase: &str) -> Vec<String> {
    words(phrase).into_iter().map(|w| w.stem).collect()
}

fn parse_class(line: &str) -> Option<Class> {
    let (name, members) = line.split_once(':')?;
    let members = members
        .split(',')
        .map(|m| {
            m.split('|')
                .map(stems_of)
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
        })
        .filter(|m| !m.is_empty())
        .collect();
    Some(Class {
        name: name.trim().to_owned(),
        members,
    })
}

static LEXICON: LazyLock<Arc<Lexicon>> = LazyLock::new(|| {
    let mut antonyms: HashMap<String, Vec<String>> = HashMap::new();
    for line in data_lines(ANTONYMS) {
        let mut parts = line.split_whitespace();
        if let (Some(a), Some(b)) = (parts.next(), parts.next()) {
            let (a, b) = (stem(a), stem(b));
            antonyms.entry(a.clone()).or_default().push(b.clone());
            antonyms.entry(b).or_default().push(a);
        }
    }
    let classes = data_lines(CLASSES).filter_map(parse_class).collect();
    Arc::new(Lexicon::new(antonyms, classes))
});

/// The rule checks (see the module docs); `Guards::default()` carries the shipped lists.
#[derive(Debug, Clone)]
pub struct Guards {
    info: VerifierInfo,
    lexicon: Arc<Lexicon>,
}

impl Default for Guards {
    fn default() -> Self {
        Self {
            info: VerifierInfo::new("guards").everywhere(),
            lexicon: Arc::clone(&LEXICON),
        }
    }
}

impl Guards {
    /// The guards with the shipped lists.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a closed class, written as a line of `data/classes.txt`: `name: member, member|other
    /// spelling, …` (your plans, products or regions). A line without `:` is a
    /// [`Config`](resk_core::ErrorKind::Config) error.
    pub fn with_class(mut self, line: &str) -> Result<Self> {
        let class = parse_class(line).filter(|c| c.members.len() >= 2).ok_or_else(|| {
            resk_core::Error::new(
                resk_core::ErrorKind::Config,
                "resk",
                "guards",
                format!("a class is `name: member, member|spelling, …` with two members or more, not {line:?}"),
            )
        })?;
        let mut classes = self.lexicon.classes.clone();
        classes.push(class);
        self.lexicon = Arc::new(Lexicon::new(self.lexicon.antonyms.clone(), classes));
        Ok(self)
    }

    /// The first conflict between `a` and `b`, as a reject; abstain when there is none.
    pub fn check(&self, a: &str, b: &str) -> Judgement {
        self.compare(&self.analyse(a), &self.analyse(b))
    }

    /// What the rules read of one question: its words and everything derived from them alone.
    fn analyse(&self, question: &str) -> Analysis {
        let words = words(question);
        let mut stems: Vec<String> = words.iter().map(|w| w.stem.clone()).collect();
        stems.sort_unstable();
        stems.dedup();
        // Each word's stem, and for `cheapest`/`cheaper` the base adjective's stem too.
        let word_stems = |w: &Word| {
            let base = w
                .text
                .strip_suffix("est")
                .or_else(|| w.text.strip_suffix("er"))
                .filter(|b| b.len() >= 3)
                .map(stem);
            std::iter::once(w.stem.clone()).chain(base)
        };
        let mut wide_stems = Vec::new();
        let mut opposites = Vec::new();
        let mut prefixed = Vec::new();
        for (i, w) in words.iter().enumerate() {
            for s in word_stems(w) {
                for o in self.lexicon.antonyms.get(&s).into_iter().flatten() {
                    opposites.push((i, o.clone()));
                }
                wide_stems.push(s);
            }
            for p in PREFIXES {
                if let Some(rest) = w.text.strip_prefix(p)
                    && rest.len() >= 4
                {
                    prefixed.push((i, rest.to_owned(), stem(rest)));
                }
            }
        }
        wide_stems.sort_unstable();
        wide_stems.dedup();
        Analysis {
            negations: words.iter().filter(|w| w.negates()).count(),
            stems,
            wide_stems,
            opposites,
            prefixed,
            numbers: number_values(&words, true),
            numbers_but_one: number_values(&words, false),
            members: self.members(&words),
            sides: sides(&words),
            words,
        }
    }

    /// The first conflict between two analysed questions (the rules in the module docs' order).
    fn compare(&self, a: &Analysis, b: &Analysis) -> Judgement {
        negation(a, b)
            .or_else(|| polarity(a, b).or_else(|| polarity(b, a)))
            .or_else(|| antonym(a, b))
            .or_else(|| numbers(a, b))
            .or_else(|| self.classes(a, b))
            .or_else(|| direction(a, b))
            .unwrap_or_else(|| Judgement::abstain("no_conflict"))
    }

    /// Members of each class found in `words`, by index, with the position of their first word
    /// (of the member's first spelling, in the list's order, found in `words`), in class and member
    /// order.
    fn members(&self, words: &[Word]) -> Vec<(usize, usize, usize)> {
        let stems: Vec<&str> = words.iter().map(|w| w.stem.as_str()).collect();
        // (class, member) → (spelling, position) of the best match so far.
        let mut best: HashMap<(usize, usize), (usize, usize)> = HashMap::new();
        for (at, first) in stems.iter().enumerate() {
            let Some(starting) = self.lexicon.first_stems.get(*first) else {
                continue;
            };
            for &(ci, mi, si) in starting {
                let seq = &self.lexicon.classes[ci].members[mi][si];
                let here = stems
                    .get(at..at + seq.len())
                    .is_some_and(|w| w.iter().zip(seq).all(|(a, b)| *a == b));
                if here {
                    best.entry((ci, mi))
                        .and_modify(|found| *found = (*found).min((si, at)))
                        .or_insert((si, at));
                }
            }
        }
        let mut found: Vec<(usize, usize, usize)> = best
            .into_iter()
            .map(|((ci, mi), (_, at))| (ci, mi, at))
            .collect();
        found.sort_unstable();
        found
    }

    fn classes(&self, a: &Analysis, b: &Analysis) -> Option<Judgement> {
        let (ma, mb) = (&a.members, &b.members);
        // At most one entry per (class, member), sorted: membership is a scan of a few entries.
        let has = |m: &[(usize, usize, usize)], c: usize, i: usize| {
            m.iter().any(|&(cc, ii, _)| cc == c && ii == i)
        };
        let name = |c: usize, i: usize, q: &Analysis| {
            q.members
                .iter()
                .find(|&&(cc, ii, _)| cc == c && ii == i)
                .and_then(|&(_, _, at)| q.words.get(at))
                .map_or_else(String::new, |w| w.text.clone())
        };
        let class_name = |c: usize| self.lexicon.classes.get(c).map_or("", |k| k.name.as_str());
        for &(c, i, _) in ma.iter().filter(|&&(c, i, _)| !has(mb, c, i)) {
            if let Some(&(_, j, _)) = mb.iter().find(|&&(cc, jj, _)| cc == c && !has(ma, cc, jj)) {
                return Some(Judgement::reject(format!(
                    "swap: {} ({} vs {})",
                    class_name(c),
                    name(c, i, a),
                    name(c, j, b)
                )));
            }
        }
        // Two members of one class in both questions, in opposite orders.
        for &(c, i, ai) in ma {
            for &(c2, j, aj) in ma {
                if c2 != c || i == j || ai >= aj {
                    continue;
                }
                let pos = |k: usize| mb.iter().find(|&&(cc, kk, _)| cc == c && kk == k);
                if let (Some(&(_, _, bi)), Some(&(_, _, bj))) = (pos(i), pos(j))
                    && bi > bj
                {
                    return Some(Judgement::reject(format!(
                        "direction: {} and {} in the other order",
                        name(c, i, a),
                        name(c, j, a)
                    )));
                }
            }
        }
        None
    }
}

/// One question as the rules read it ([`Guards::analyse`]): made once per question, so checking a
/// pair only compares, and the query's is made before the embedding ([`Verifier::prepare`]).
#[derive(Debug)]
struct Analysis {
    words: Vec<Word>,
    /// How many words negate.
    negations: usize,
    /// The words' stems, sorted, without repeats.
    stems: Vec<String>,
    /// `stems` and the base adjectives' stems (`cheapest` → `cheap`), sorted, without repeats.
    wide_stems: Vec<String>,
    /// `(word, opposite stem)` for every curated opposite of a word's stems, in word order.
    opposites: Vec<(usize, String)>,
    /// `(word, rest, stem of rest)` for every opposite-making prefix a word starts with (a rest of
    /// four letters or more), in word order.
    prefixed: Vec<(usize, String, String)>,
    /// The numbers, with `one` and without it ([`number_values`]).
    numbers: Vec<String>,
    numbers_but_one: Vec<String>,
    /// The class members found ([`Guards::members`]).
    members: Vec<(usize, usize, usize)>,
    /// The content stems either side of a direction marker ([`sides`]).
    sides: Option<(Vec<String>, Vec<String>)>,
}

/// A query's analysis as [`Guards::prepare`](Verifier::prepare) hands it over, with the word lists
/// its `members` and `opposites` index into: only guards with the same lists use it.
#[derive(Debug)]
struct PreparedAnalysis {
    lexicon: Arc<Lexicon>,
    query: Analysis,
}

/// Whether the sorted list `stems` holds `stem`.
fn holds(stems: &[String], stem: &str) -> bool {
    stems.binary_search_by(|s| s.as_str().cmp(stem)).is_ok()
}

impl Analysis {
    fn has_stem(&self, stem: &str) -> bool {
        holds(&self.stems, stem)
    }

    fn has_wide_stem(&self, stem: &str) -> bool {
        holds(&self.wide_stems, stem)
    }
}

fn negation(a: &Analysis, b: &Analysis) -> Option<Judgement> {
    if a.negations % 2 == b.negations % 2 {
        return None;
    }
    let words = if a.negations > b.negations {
        &a.words
    } else {
        &b.words
    };
    let marker = words
        .iter()
        .find(|w| w.negates())
        .map_or("not", |w| w.text.as_str());
    Some(Judgement::reject(format!(
        "negation: `{marker}` in one question only"
    )))
}

/// A word of `a` that is a prefixed opposite of a word of `b` (and not itself in `b`).
fn polarity(a: &Analysis, b: &Analysis) -> Option<Judgement> {
    let prefixed = a.prefixed.iter().map(|(i, rest, base)| (*i, rest, base));
    let (w, rest) = opposed(a, b, prefixed, Analysis::has_stem)?;
    Some(Judgement::reject(format!("polarity: {} vs {rest}", w.text)))
}

/// A word of `a` whose curated opposite `b` says (and `a` does not).
fn antonym(a: &Analysis, b: &Analysis) -> Option<Judgement> {
    let opposites = a.opposites.iter().map(|(i, o)| (*i, o, o));
    let (w, o) = opposed(a, b, opposites, Analysis::has_wide_stem)?;
    Some(Judgement::reject(format!("antonym: {} vs {o}", w.text)))
}

/// The first of `candidates` — `(word of a, what to show, opposite stem)` — whose word `b` does not
/// say and whose opposite `b` says and `a` does not; `says` reads a question's stems.
fn opposed<'a>(
    a: &'a Analysis,
    b: &Analysis,
    candidates: impl Iterator<Item = (usize, &'a String, &'a String)>,
    says: fn(&Analysis, &str) -> bool,
) -> Option<(&'a Word, &'a str)> {
    candidates
        .filter_map(|(i, shown, opposite)| Some((a.words.get(i)?, shown, opposite)))
        .find(|(w, _, opposite)| {
            !says(b, &w.stem) && says(b, opposite.as_str()) && !says(a, opposite.as_str())
        })
        .map(|(w, shown, _)| (w, shown.as_str()))
}

/// The numbers in `words` (digit runs and number words, `one` only if `with_one`), sorted.
fn number_values(words: &[Word], with_one: bool) -> Vec<String> {
    let mut out = Vec::new();
    for w in words {
        let mut run = String::new();
        for c in w.text.chars().chain(std::iter::once(' ')) {
            if c.is_ascii_digit() {
                run.push(c);
            } else if !run.is_empty() {
                let trimmed = run.trim_start_matches('0');
                out.push(if trimmed.is_empty() { "0" } else { trimmed }.to_owned());
                run.clear();
            }
        }
        if !with_one && w.text == "one" {
            continue;
        }
        if let Some((_, v)) = NUMBER_WORDS.iter().find(|(name, _)| *name == w.text) {
            out.push(v.to_string());
        }
    }
    out.sort();
    out
}

fn numbers(a: &Analysis, b: &Analysis) -> Option<Judgement> {
    let (na, nb) = (&a.numbers, &b.numbers);
    // `one` is as often a pronoun (*how do I write one?*) as a number: it counts only if the
    // questions still differ without it.
    if na == nb || a.numbers_but_one == b.numbers_but_one {
        return None;
    }
    Some({
        let show = |n: &[String]| {
            if n.is_empty() {
                "none".to_owned()
            } else {
                n.join(", ")
            }
        };
        Judgement::reject(format!("number: {} vs {}", show(na), show(nb)))
    })
}

/// The content stems before and after the direction marker: `from X to Y` (or `to Y from X`),
/// else around the last marker; each side sorted, without repeats.
fn sides(words: &[Word]) -> Option<(Vec<String>, Vec<String>)> {
    fn content(ws: &[Word]) -> Vec<String> {
        let mut stems: Vec<String> = ws
            .iter()
            .filter(|w| w.content())
            .map(|w| w.stem.clone())
            .collect();
        stems.sort_unstable();
        stems.dedup();
        stems
    }
    let from = words.iter().position(|w| w.text == "from");
    let marker = |range: &[Word]| {
        range
            .iter()
            .rposition(|w| DIRECTION_MARKERS.contains(&w.text.as_str()))
    };
    match from {
        Some(f) => {
            // `from X to Y`, the marker after `from`.
            if let Some(t) = marker(&words[f + 1..]).map(|t| t + f + 1) {
                return Some((content(&words[f + 1..t]), content(&words[t + 1..])));
            }
            // `to Y from X`.
            let t = marker(&words[..f])?;
            Some((content(&words[f + 1..]), content(&words[t + 1..f])))
        }
        None => {
            let t = marker(words)?;
            Some((content(&words[..t]), content(&words[t + 1..])))
        }
    }
}

fn direction(a: &Analysis, b: &Analysis) -> Option<Judgement> {
    let ((xa, ya), (xb, yb)) = (a.sides.as_ref()?, b.sides.as_ref()?);
    fn moved<'w>(
        from_a: &'w [String],
        other_a: &[String],
        to_b: &[String],
        other_b: &[String],
    ) -> Option<&'w str> {
        from_a
            .iter()
            .find(|w| !holds(other_a, w) && holds(to_b, w) && !holds(other_b, w))
            .map(String::as_str)
    }
    let word = moved(xa, ya, yb, xb).or_else(|| moved(ya, xa, xb, yb))?;
    Some(Judgement::reject(format!(
        "direction: `{word}` is on the other side"
    )))
}

impl Verifier for Guards {
    fn info(&self) -> &VerifierInfo {
        &self.info
    }

    fn prepare(&self, query: &str) -> Option<Prepared> {
        Some(Prepared::new(PreparedAnalysis {
            lexicon: Arc::clone(&self.lexicon),
            query: self.analyse(query),
        }))
    }

    async fn verify(&self, pair: &Pair<'_>) -> Result<Judgement> {
        let cached = self.analyse(pair.cached);
        // Prepared by these guards' lists (another guards' analysis indexes other lists).
        let prepared = pair
            .prepared
            .and_then(Prepared::get::<PreparedAnalysis>)
            .filter(|p| Arc::ptr_eq(&p.lexicon, &self.lexicon));
        Ok(match prepared {
            Some(p) => self.compare(&p.query, &cached),
            None => self.compare(&self.analyse(pair.query), &cached),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(a: &str, b: &str) -> String {
        Guards::default().check(a, b).label().to_owned()
    }

    #[test]
    fn each_rule_rejects_its_case_and_passes_paraphrases() {
        let cases = [
            (
                "Can I pay by credit card?",
                "Can I not pay by credit card?",
                "negation",
            ),
            (
                "Is the service available in Canada?",
                "Is the service unavailable in Canada?",
                "polarity",
            ),
            (
                "Is the order refundable?",
                "Is the order non-refundable?",
                "negation",
            ),
            (
                "How do I enable two-factor authentication?",
                "How do I disable two-factor authentication?",
                "antonym",
            ),
            (
                "How do I turn on location services?",
                "How do I turn off location services?",
                "antonym",
            ),
            (
                "Can I return an item after 30 days?",
                "Can I return an item after 90 days?",
                "number",
            ),
            (
                "Which train leaves at 8:15?",
                "Which train leaves at 18:15?",
                "number",
            ),
            (
                "How do I take a screenshot on Windows?",
                "How do I take a screenshot on a Mac?",
                "swap",
            ),
            (
                "What is included in the Pro plan?",
                "What is included in the Enterprise plan?",
                "swap",
            ),
            (
                "How do I convert Celsius to Fahrenheit?",
                "How do I convert Fahrenheit to Celsius?",
                "direction",
            ),
            (
                "How long does it take to drive from Boston to Chicago?",
                "How long does it take to drive from Chicago to Boston?",
                "direction",
            ),
            (
                "How many dollars is one euro?",
                "How many euros is one dollar?",
                "direction",
            ),
            (
                "How do I set up two-factor authentication?",
                "How can I add 2FA to my account?",
                "no_conflict",
            ),
            (
                "How do I make a cake without eggs?",
                "What's an eggless cake recipe?",
                "no_conflict",
            ),
            (
                "How do I get to the airport from downtown?",
                "What's the best way to travel from the city centre to the airport?",
                "no_conflict",
            ),
            (
                "How do I add a user to a Linux group?",
                "What's the command to put a user into a group on Linux?",
                "no_conflict",
            ),
            (
                "How do I change my shipping address?",
                "How can I update the delivery address for my order?",
                "no_conflict",
            ),
            (
                "How do I write a cover letter?",
                "What should a cover letter include and how do I write one?",
                "no_conflict",
            ),
            (
                "How do I merge two accounts?",
                "Can I combine my two accounts into one?",
                "no_conflict",
            ),
            (
                "How many dollars is one euro?",
                "How many dollars are two euros?",
                "number",
            ),
            (
                "What is the cheapest plan?",
                "What is the most expensive plan?",
                "antonym",
            ),
        ];
        for (a, b, want) in cases {
            assert_eq!(label(a, b), want, "{a} / {b}");
            assert_eq!(label(b, a), want, "{b} / {a}");
        }
    }

    #[tokio::test]
    async fn a_prepared_query_gives_the_verdicts_of_an_unprepared_one() {
        let guards = Guards::default();
        let pairs = [
            (
                "How do I enable two-factor authentication?",
                "How do I disable two-factor authentication?",
            ),
            (
                "Is the service available in Canada?",
                "Is the service unavailable in Canada?",
            ),
            (
                "What is the cheapest plan?",
                "What is the most expensive plan?",
            ),
            (
                "Can I return an item after 30 days?",
                "Can I return an item after 90 days?",
            ),
            (
                "How do I take a screenshot on Windows?",
                "How do I take a screenshot on a Mac?",
            ),
            (
                "How many dollars is one euro?",
                "How many euros is one dollar?",
            ),
            (
                "How do I convert Celsius to Fahrenheit?",
                "How do I convert Fahrenheit to Celsius?",
            ),
            ("Can I pay by credit card?", "Can I not pay by credit card?"),
            (
                "How do I change my shipping address?",
                "How can I update the delivery address for my order?",
            ),
        ];
        for (query, cached) in pairs {
            let plain = guards.verify(&Pair::new(query, cached, 0.9)).await.unwrap();
            let prepared = guards.prepare(query).unwrap();
            let pair = Pair::new(query, cached, 0.9).with_prepared(Some(&prepared));
            assert_eq!(
                guards.verify(&pair).await.unwrap(),
                plain,
                "{query} / {cached}"
            );
            assert_eq!(plain, guards.check(query, cached));
        }
        // Guards with other lists ignore an analysis made with these (its class indexes differ),
        // and a value of another type is no analysis at all.
        let regions = Guards::default()
            .with_class("region: emea, apac, americas")
            .unwrap();
        let (query, cached) = ("Prices in EMEA?", "Prices in APAC?");
        let foreign = guards.prepare(query).unwrap();
        let pair = Pair::new(query, cached, 0.9).with_prepared(Some(&foreign));
        assert_eq!(regions.verify(&pair).await.unwrap().label(), "swap");
        let other = Prepared::new(7_u32);
        let pair = Pair::new(query, cached, 0.9).with_prepared(Some(&other));
        assert_eq!(regions.verify(&pair).await.unwrap().label(), "swap");
    }

    #[test]
    fn a_deployment_adds_its_own_classes() {
        let g = Guards::default()
            .with_class("region: emea, apac, americas")
            .unwrap();
        assert_eq!(
            g.check("Prices in EMEA?", "Prices in APAC?").label(),
            "swap"
        );
        assert!(Guards::default().with_class("no colon here").is_err());
        assert!(Guards::default().with_class("lonely: one").is_err());
    }
}
