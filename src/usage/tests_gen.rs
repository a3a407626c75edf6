//! The generator of random JSON for the property tests in `tests_fast.rs`:
//! chunks, `usage` objects and stream-shaped chunks with random key order,
//! whitespace, escapes, unicode, unknown and nested fields, number forms,
//! nulls, missing, repeated and mistyped fields, and corruption.

pub(super) use crate::translate::test_support::XorShift;

/// Random JSON text. `odd`: how rarely (1 in `odd`) to produce unusual
/// shapes: wrong types, repeated fields, arrays for objects, lone
/// surrogates, out-of-range numbers.
pub(super) struct Gen {
    pub(super) rng: XorShift,
    pub(super) out: String,
    odd: usize,
    /// Written instead of every text field's string (after drawing it, so
    /// that the rest of the output does not change).
    pub(super) text_override: Option<String>,
    /// When set, sometimes replaces a string or number just written by
    /// another one drawn from it (again leaving the rest of the output as
    /// it was).
    pub(super) vary: Option<XorShift>,
}

/// An object member: its key and what writes its value.
pub(super) type Member = (&'static str, fn(&mut Gen));

pub(super) const TEXT_PIECES: &[&str] = &[
    "Hello",
    " world",
    " wörld",
    " 世界",
    " 🚀",
    "café",
    "a",
    " ",
    "1234",
    "ß",
    "한국어",
    "\\\"",
    "\\\\",
    "\\/",
    "\\b",
    "\\f",
    "\\n",
    "\\r",
    "\\t",
    "\\u00e9",
    "\\u00E9",
    "\\u4e16",
    "\\u0000",
    "\\u001f",
    "\\ud83d\\ude80",
    "\\uD83D\\uDE80",
    "\\u0041",
    "\\uffff",
    "\\u2028",
];

impl Gen {
    pub(super) fn new(seed: u64, odd: usize) -> Self {
        Gen {
            rng: XorShift(seed),
            out: String::new(),
            odd,
            text_override: None,
            vary: None,
        }
    }

    pub(super) fn odd(&mut self) -> bool {
        self.rng.one_in(self.odd)
    }

    pub(super) fn ws(&mut self) {
        if self.rng.one_in(3) {
            for _ in 0..1 + self.rng.below(3) {
                let w = self.rng.pick(&[" ", "\t", "\n", "\r", "  "]);
                self.out.push_str(w);
            }
        }
    }

    pub(super) fn string(&mut self) {
        let at = self.out.len();
        self.string_drawn();
        if let Some(vary) = self.vary.as_mut() {
            if !vary.one_in(3) {
                return;
            }
            let other = override_text(vary);
            self.out.truncate(at);
            self.out.push_str(&other);
        }
    }

    fn string_drawn(&mut self) {
        self.out.push('"');
        for _ in 0..self.rng.below(6) {
            let piece = self.rng.pick(TEXT_PIECES);
            self.out.push_str(piece);
        }
        if self.odd() {
            let bad = self.rng.pick(&[
                "\\ud800",
                "\\udc00x",
                "\\ud83d\\u0041",
                "\u{1}",
                "\\x",
                "\\u12",
                "\u{7f}",
            ]);
            self.out.push_str(bad);
        }
        self.out.push('"');
    }

    pub(super) fn number(&mut self) {
        let n = self.rng.pick(&[
            "0",
            "-0",
            "7",
            "12",
            "-3",
            "1.5",
            "0.25",
            "3.0",
            "1e3",
            "1E+2",
            "-2.5e-3",
            "18446744073709551615",
            "18446744073709551616",
            "99999999999999999999999",
            "1e400",
            "-1e400",
            "4.9e-400",
        ]);
        self.out.push_str(n);
        if let Some(vary) = self.vary.as_mut() {
            if !vary.one_in(3) {
                return;
            }
            let other = vary.pick(&[
                "0",
                "1",
                "42",
                "-7",
                "1732000001",
                "2.5",
                "1e3",
                "01",
                "1.",
                "-",
                "1e",
                "\"1\"",
                "null",
            ]);
            self.out.truncate(self.out.len() - n.len());
            self.out.push_str(other);
        }
    }

    pub(super) fn key(&mut self, name: &str) {
        self.ws();
        if self.rng.one_in(12) {
            // The same key with its first character escaped.
            let mut chars = name.chars();
            if let Some(c) = chars.next() {
                self.out
                    .push_str(&format!("\"\\u{:04x}{}\"", c as u32, chars.as_str()));
            }
        } else {
            self.out.push('"');
            self.out.push_str(name);
            self.out.push('"');
        }
        self.ws();
        self.out.push(':');
        self.ws();
    }

    /// An object from `(key, value writer)` members in random order, some
    /// members left out, sometimes one repeated.
    pub(super) fn object(&mut self, members: &[Member], keep: usize) {
        let mut order: Vec<usize> = (0..members.len())
            .filter(|_| self.rng.below(keep) != 0)
            .collect();
        for i in (1..order.len()).rev() {
            let j = self.rng.below(i + 1);
            order.swap(i, j);
        }
        if !order.is_empty() && self.odd() {
            let again = order[self.rng.below(order.len())];
            order.push(again);
        }
        self.ws();
        self.out.push('{');
        for (n, &i) in order.iter().enumerate() {
            if n > 0 {
                self.ws();
                self.out.push(',');
            }
            self.key(members[i].0);
            (members[i].1)(self);
            self.ws();
        }
        self.out.push('}');
    }

    pub(super) fn array(&mut self, max: usize, item: fn(&mut Gen)) {
        self.out.push('[');
        for n in 0..self.rng.below(max + 1) {
            if n > 0 {
                self.ws();
                self.out.push(',');
            }
            self.ws();
            item(self);
            self.ws();
        }
        self.out.push(']');
    }

    /// Any value, nested up to `depth`.
    pub(super) fn any(&mut self, depth: usize) {
        match self.rng.below(if depth == 0 { 6 } else { 8 }) {
            0 => self.out.push_str("null"),
            1 => self.out.push_str("true"),
            2 => self.out.push_str("false"),
            3 | 4 => self.number(),
            5 => self.string(),
            6 => {
                self.out.push('[');
                for n in 0..self.rng.below(4) {
                    if n > 0 {
                        self.out.push(',');
                    }
                    self.ws();
                    self.any(depth - 1);
                }
                self.out.push(']');
            }
            _ => {
                self.out.push('{');
                for n in 0..self.rng.below(4) {
                    if n > 0 {
                        self.out.push(',');
                    }
                    let k = self.rng.pick(&["a", "usage", "content", "x y", "\\u00e9"]);
                    self.key(k);
                    self.any(depth - 1);
                }
                self.out.push('}');
            }
        }
    }

    /// A text field: mostly a string.
    pub(super) fn text(&mut self) {
        if self.rng.one_in(4) {
            self.out.push_str("null");
        } else if self.odd() {
            self.any(2);
        } else {
            let at = self.out.len();
            self.string();
            if let Some(text) = &self.text_override {
                self.out.truncate(at);
                self.out.push_str(text);
            }
        }
    }

    /// A value that should be an object (`f`), sometimes null, rarely
    /// something else.
    pub(super) fn object_or(&mut self, f: fn(&mut Gen)) {
        if self.rng.one_in(8) {
            self.out.push_str("null");
        } else if self.odd() {
            self.any(2);
        } else {
            f(self);
        }
    }

    pub(super) fn extra(&mut self) {
        self.any(3);
    }

    pub(super) fn function(&mut self) {
        self.object(
            &[
                ("name", |g| g.string()),
                ("arguments", Gen::text),
                ("extra", Gen::extra),
            ],
            4,
        );
    }

    pub(super) fn tool_call(&mut self) {
        self.object(
            &[
                ("index", |g| g.number()),
                ("id", |g| g.string()),
                ("type", |g| g.out.push_str("\"function\"")),
                ("function", |g| g.object_or(Gen::function)),
            ],
            5,
        );
    }

    pub(super) fn delta(&mut self) {
        self.object(
            &[
                ("role", |g| g.out.push_str("\"assistant\"")),
                ("content", Gen::text),
                ("reasoning_content", Gen::text),
                ("reasoning", Gen::text),
                ("refusal", |g| g.out.push_str("null")),
                ("tool_calls", |g| {
                    g.object_or(|g| g.array(3, |g| g.object_or(Gen::tool_call)))
                }),
                ("extra", Gen::extra),
            ],
            2,
        );
    }

    pub(super) fn choice(&mut self) {
        self.object(
            &[
                ("index", |g| g.number()),
                ("delta", |g| g.object_or(Gen::delta)),
                ("text", Gen::text),
                ("logprobs", |g| g.out.push_str("null")),
                ("finish_reason", |g| g.text()),
            ],
            3,
        );
    }

    pub(super) fn count(&mut self) {
        if self.rng.one_in(6) {
            self.out.push_str("null");
        } else if self.odd() {
            match self.rng.below(3) {
                0 => self.number(),
                1 => self.string(),
                _ => self.out.push_str("\"12\""),
            }
        } else {
            let n = self.rng.next() >> self.rng.below(64);
            self.out.push_str(&n.to_string());
        }
    }

    pub(super) fn details(&mut self) {
        self.object(
            &[
                ("cached_tokens", Gen::count),
                ("reasoning_tokens", Gen::count),
                ("audio_tokens", Gen::count),
            ],
            3,
        );
    }

    /// Chat Completions names, or (one time in four) the Responses API
    /// ones, rarely both.
    pub(super) fn usage(&mut self) {
        let mut members: Vec<Member> = vec![("total_tokens", Gen::count), ("extra", Gen::extra)];
        let chat: [Member; 4] = [
            ("prompt_tokens", Gen::count),
            ("completion_tokens", Gen::count),
            ("prompt_tokens_details", |g| g.object_or(Gen::details)),
            ("completion_tokens_details", |g| g.object_or(Gen::details)),
        ];
        let responses: [Member; 4] = [
            ("input_tokens", Gen::count),
            ("output_tokens", Gen::count),
            ("input_tokens_details", |g| g.object_or(Gen::details)),
            ("output_tokens_details", |g| g.object_or(Gen::details)),
        ];
        match (self.rng.one_in(4), self.odd()) {
            (_, true) => {
                members.extend(chat);
                members.extend(responses);
            }
            (false, false) => members.extend(chat),
            (true, false) => members.extend(responses),
        }
        self.object(&members, 4);
    }

    pub(super) fn chunk(&mut self) {
        self.object(
            &[
                ("id", |g| g.out.push_str("\"chatcmpl-1\"")),
                ("object", |g| g.string()),
                ("created", |g| g.number()),
                ("model", |g| g.string()),
                ("choices", |g| {
                    if g.rng.one_in(8) {
                        g.out.push_str("null");
                    } else if g.odd() {
                        g.any(2);
                    } else {
                        g.array(3, |g| g.object_or(Gen::choice));
                    }
                }),
                ("usage", |g| {
                    if g.rng.one_in(2) {
                        g.out.push_str("null");
                    } else {
                        g.object_or(Gen::usage);
                    }
                }),
                ("extra", Gen::extra),
            ],
            6,
        );
        self.ws();
    }

    /// A chunk shaped like most of a real stream: one choice whose delta
    /// has one text field, among other (random) members.
    pub(super) fn stream_chunk(&mut self) {
        self.object(
            &[
                ("id", |g| g.out.push_str("\"chatcmpl-1\"")),
                ("created", |g| g.number()),
                ("model", |g| g.string()),
                ("choices", |g| {
                    g.out.push('[');
                    g.object(
                        &[
                            ("index", |g| g.number()),
                            ("delta", |g| {
                                let field =
                                    ["content", "reasoning_content", "reasoning"][g.rng.below(3)];
                                g.out.push('{');
                                g.key(field);
                                g.text();
                                if g.rng.one_in(2) {
                                    g.out.push(',');
                                    g.key("role");
                                    g.any(1);
                                }
                                g.out.push('}');
                            }),
                            ("logprobs", |g| g.out.push_str("null")),
                            ("finish_reason", |g| g.out.push_str("null")),
                        ],
                        8,
                    );
                    g.out.push(']');
                }),
                ("usage", |g| g.out.push_str("null")),
                ("extra", Gen::extra),
            ],
            6,
        );
        self.ws();
    }

    /// Corrupt the text: truncate, or drop, insert or replace a character
    /// (so it stays a `str`).
    pub(super) fn corrupt(&mut self) {
        let bounds: Vec<usize> = (0..=self.out.len())
            .filter(|&i| self.out.is_char_boundary(i))
            .collect();
        let at = bounds[self.rng.below(bounds.len())];
        let mode = self.rng.below(4);
        if mode == 0 {
            self.out.truncate(at);
            return;
        }
        if mode != 2 && at < self.out.len() {
            self.out.remove(at);
        }
        if mode != 1 {
            let c = self.rng.pick(&[
                "{", "}", "[", "]", ",", ":", "\"", "\\", "0", "-", "n", ".", "e", " ", "\u{1}",
                "\u{b}", "\u{c}", "\u{a0}", "\u{feff}",
            ]);
            self.out.insert_str(at, c);
        }
    }
}

/// A string literal for [`Gen::text_override`]: mostly valid, sometimes
/// not (an early quote, a bad escape, a control character, a `~` that the
/// caller may turn into invalid UTF-8).
pub(super) fn override_text(rng: &mut XorShift) -> String {
    let mut s = String::from("\"");
    for _ in 0..rng.below(5) {
        s.push_str(rng.pick(TEXT_PIECES));
    }
    if rng.one_in(6) {
        s.push_str(rng.pick(&["a\"b", "\\", "\\x", "\u{1}", "~", "\\ud800", "\"", "\\\""]));
    }
    s.push('"');
    s
}
