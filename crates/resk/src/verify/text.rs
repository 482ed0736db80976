//! Words of a question, as the guards and token alignment compare them: lowercase tokens, English
//! contractions expanded (`don't` → `do not`), Snowball (Porter2) stems, stopwords marked.
//!
//! Why `rust-stemmers`: it is the maintained Rust port of the Snowball stemmers (the algorithm
//! Lucene, Elasticsearch and NLTK use), so `enable`, `enabled` and `enabling` meet without a word
//! list of inflections here.

use std::sync::LazyLock;

use rust_stemmers::{Algorithm, Stemmer};

static STEMMER: LazyLock<Stemmer> = LazyLock::new(|| Stemmer::create(Algorithm::English));

/// Function words: they carry no content of their own. Negations are *not* here: they are
/// counted apart.
const STOPWORDS: &[&str] = &[
    "a",
    "about",
    "all",
    "also",
    "am",
    "an",
    "and",
    "any",
    "anyone",
    "are",
    "as",
    "at",
    "be",
    "been",
    "being",
    "but",
    "by",
    "can",
    "could",
    "did",
    "do",
    "does",
    "doing",
    "done",
    "each",
    "else",
    "for",
    "from",
    "get",
    "gets",
    "getting",
    "got",
    "had",
    "has",
    "have",
    "having",
    "he",
    "her",
    "here",
    "hers",
    "him",
    "his",
    "how",
    "i",
    "i'd",
    "i'll",
    "i'm",
    "i've",
    "if",
    "in",
    "into",
    "is",
    "it",
    "it's",
    "its",
    "just",
    "let",
    "let's",
    "like",
    "me",
    "mine",
    "my",
    "myself",
    "of",
    "on",
    "one's",
    "or",
    "our",
    "ours",
    "out",
    "please",
    "really",
    "she",
    "should",
    "so",
    "some",
    "someone",
    "something",
    "than",
    "that",
    "that's",
    "the",
    "their",
    "them",
    "then",
    "there",
    "there's",
    "these",
    "they",
    "this",
    "those",
    "to",
    "too",
    "up",
    "us",
    "very",
    "want",
    "was",
    "way",
    "we",
    "were",
    "what",
    "what's",
    "whats",
    "when",
    "where",
    "where's",
    "which",
    "while",
    "who",
    "who's",
    "whom",
    "whose",
    "why",
    "will",
    "with",
    "would",
    "you",
    "your",
    "yours",
    "yourself",
    "can't",
    "need",
    "needs",
    "able",
    "ways",
    "know",
    "tell",
    "go",
    "going",
    "make",
    "use",
    "using",
    "new",
    // Question framing: how a question asks, not what it asks about.
    "best",
    "good",
    "tips",
    "process",
    "explain",
    "steps",
    "help",
    "most",
    "per",
    "another",
    "already",
    "yet",
    "find",
    "see",
    "look",
    "looks",
    "makes",
    "made",
    // Light verbs and pronoun `one` (numbers are the guards' business).
    "one",
    "take",
    "put",
    "set",
    "give",
    "try",
];

/// [`STOPWORDS`] as a set: every word of both questions of every candidate is looked up.
static STOPWORD_SET: LazyLock<std::collections::HashSet<&'static str>> =
    LazyLock::new(|| STOPWORDS.iter().copied().collect());

/// Words that turn a statement into its negation.
const NEGATIONS: &[&str] = &[
    "not", "no", "never", "without", "none", "nothing", "nobody", "nowhere", "neither", "nor",
    "non", "cannot",
];

/// `-less` words that are not the negation of their stem.
const LESS_EXCEPTIONS: &[&str] = &[
    "unless",
    "regardless",
    "nevertheless",
    "wireless",
    "bless",
    "less",
];

/// One word of a question.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Word {
    /// Lowercase, as written (contractions expanded).
    pub(crate) text: String,
    /// Snowball stem of `text`.
    pub(crate) stem: String,
    /// A function word.
    pub(crate) stop: bool,
}

impl Word {
    /// Whether this word negates (`not`, `without`, `never`, a `-less` word, …).
    pub(crate) fn negates(&self) -> bool {
        NEGATIONS.contains(&self.text.as_str())
            || (self.text.len() > 6
                && self.text.ends_with("less")
                && !LESS_EXCEPTIONS.contains(&self.text.as_str()))
    }

    /// A content word: not a function word, not a negation, not a number, three letters or more.
    pub(crate) fn content(&self) -> bool {
        !self.stop
            && !self.negates()
            && self.text.chars().count() >= 3
            && self.text.chars().all(char::is_alphabetic)
    }
}

/// Words whose stems one thread remembers ([`stem`]); past this the memo is emptied and refilled.
const STEM_MEMO: usize = 4096;

/// The stem of `word` (lowercase), remembered per thread: the guards stem both questions of every
/// candidate they check, and a Snowball stem costs several times a map lookup. Per thread, so the
/// semantic path takes no lock; std's SipHash, because the words are whatever clients ask.
pub(crate) fn stem(word: &str) -> String {
    thread_local! {
        static STEMS: std::cell::RefCell<std::collections::HashMap<Box<str>, Box<str>>> =
            std::cell::RefCell::default();
    }
    STEMS.with_borrow_mut(|stems| {
        if let Some(stem) = stems.get(word) {
            return stem.to_string();
        }
        let stem = STEMMER.stem(word).into_owned();
        if stems.len() >= STEM_MEMO {
            stems.clear();
        }
        stems.insert(word.into(), stem.as_str().into());
        stem
    })
}

/// The words of `text`: split on anything but letters, digits and apostrophes (a comma between
/// digits joins them: `1,000`), lowercase, contractions expanded, possessive `'s` dropped.
pub(crate) fn words(text: &str) -> Vec<Word> {
    let lower = text.to_lowercase().replace(['\u{2019}', '\u{2018}'], "'");
    let chars: Vec<char> = lower.chars().collect();
    let mut raw = Vec::new();
    let mut current = String::new();
    for (i, &c) in chars.iter().enumerate() {
        let digit_comma = c == ','
            && i > 0
            && chars[i - 1].is_ascii_digit()
            && chars.get(i + 1).is_some_and(char::is_ascii_digit);
        if digit_comma {
            continue;
        }
        if c.is_alphanumeric() || (c == '\'' && !current.is_empty()) {
            current.push(c);
        } else if !current.is_empty() {
            raw.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        raw.push(current);
    }
    let mut out = Vec::with_capacity(raw.len() + 2);
    for token in raw {
        let token = token.trim_end_matches('\'');
        let push = |out: &mut Vec<Word>, t: &str| {
            if t.is_empty() {
                return;
            }
            out.push(Word {
                text: t.to_owned(),
                stem: stem(t),
                stop: STOPWORD_SET.contains(t),
            });
        };
        match token {
            "can't" | "cannot" => {
                push(&mut out, "can");
                push(&mut out, "not");
            }
            "won't" => {
                push(&mut out, "will");
                push(&mut out, "not");
            }
            t if t.ends_with("n't") => {
                push(&mut out, &t[..t.len() - 3]);
                push(&mut out, "not");
            }
            t if t.ends_with("'s") => push(&mut out, &t[..t.len() - 2]),
            t => push(&mut out, t),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contractions_expand_and_stems_meet() {
        let w = words("Why DON'T my cards work? Isn’t 1,000 enough; the user's page");
        let texts: Vec<&str> = w.iter().map(|w| w.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "why", "do", "not", "my", "cards", "work", "is", "not", "1000", "enough", "the",
                "user", "page"
            ]
        );
        assert_eq!(stem("enabled"), stem("enabling"));
        assert_eq!(stem("enable"), stem("enables"));
        assert!(w[2].negates() && !w[2].content());
        assert!(words("an eggless cake")[1].negates());
        assert!(!words("wireless headphones")[0].negates());
    }
}
