//! A handler with no model: all its logic runs in the guest. An example is a text;
//! the inference counts its words and sentences, finds the most frequent word and
//! scores its sentiment with a small word list.
//!
//! Arguments: `min_word_len` (default 1) ignores shorter words in the counts.

use runinfer_sdk::*;
use std::collections::HashMap;

const POSITIVE: &[&str] = &[
    "good",
    "great",
    "excellent",
    "happy",
    "love",
    "nice",
    "wonderful",
    "best",
    "fast",
    "like",
];
const NEGATIVE: &[&str] = &[
    "bad", "terrible", "awful", "sad", "hate", "poor", "worst", "slow", "broken", "wrong",
];

#[derive(Default)]
struct TextStats {
    min_word_len: usize,
}

impl ModelHandler for TextStats {
    fn configure(&mut self, args: &Args) -> Result<(), Error> {
        self.min_word_len = match arg(args, "min_word_len") {
            Some(v) => v.parse().map_err(|_| {
                Error::invalid_input(format!("args.min_word_len: expected an integer, got `{v}`"))
            })?,
            None => 1,
        };
        Ok(())
    }

    fn signature(&self) -> Signature {
        // The inference is a small JSON object (`top_word` may be null).
        Signature {
            inputs: ValueKind::Text,
            outputs: ValueKind::Json,
        }
    }

    fn load_model(&mut self) -> Result<(), Error> {
        Ok(())
    }

    fn run_inference(&mut self, batch: Vec<Value>, _args: &Args) -> Result<Vec<Value>, Error> {
        let mut words_seen = 0u64;
        let results = batch
            .into_iter()
            .map(|example| {
                let text = example.into_text()?;
                let stats = self.stats(&text);
                words_seen += stats.words as u64;
                Ok(Value::Json(stats.to_json()))
            })
            .collect::<Result<Vec<_>, Error>>()?;
        metrics::counter_add("words", words_seen)?;
        Ok(results)
    }
}

struct Stats {
    words: usize,
    sentences: usize,
    top_word: Option<(String, usize)>,
    sentiment: i64,
}

impl TextStats {
    fn stats(&self, text: &str) -> Stats {
        let mut counts: HashMap<String, usize> = HashMap::new();
        let mut sentiment = 0i64;
        let mut words = 0;
        for word in text
            .split(|c: char| !c.is_alphanumeric() && c != '\'')
            .filter(|w| !w.is_empty())
        {
            let word = word.to_lowercase();
            if POSITIVE.contains(&word.as_str()) {
                sentiment += 1;
            } else if NEGATIVE.contains(&word.as_str()) {
                sentiment -= 1;
            }
            if word.chars().count() >= self.min_word_len {
                words += 1;
                *counts.entry(word).or_default() += 1;
            }
        }
        let sentences = text
            .split(['.', '!', '?'])
            .filter(|s| s.chars().any(char::is_alphanumeric))
            .count();
        // Most frequent, ties broken alphabetically so the result is deterministic.
        let top_word = counts
            .into_iter()
            .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(&a.0)));
        Stats {
            words,
            sentences,
            top_word,
            sentiment,
        }
    }
}

impl Stats {
    fn to_json(&self) -> String {
        let top = match &self.top_word {
            Some((word, count)) => format!("{{\"word\":\"{}\",\"count\":{count}}}", escape(word)),
            None => "null".into(),
        };
        let label = match self.sentiment {
            s if s > 0 => "positive",
            s if s < 0 => "negative",
            _ => "neutral",
        };
        format!(
            "{{\"words\":{},\"sentences\":{},\"top_word\":{top},\"sentiment\":{},\"label\":\"{label}\"}}",
            self.words, self.sentences, self.sentiment
        )
    }
}

fn escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| match c {
            '"' => vec!['\\', '"'],
            '\\' => vec!['\\', '\\'],
            c if (c as u32) < 0x20 => format!("\\u{:04x}", c as u32).chars().collect(),
            c => vec![c],
        })
        .collect()
}

export_handler!(TextStats);
