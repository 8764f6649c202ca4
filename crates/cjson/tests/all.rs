//! Canonical JSON against fixed cases and against Python's `json.dumps` itself.

use std::io::Write;
use std::process::{Command, Stdio};

use runplane_cjson::{CanonError, parse_canonical, sha256_hex};

#[test]
fn fixed_cases_match_python() {
    let cases: &[(&str, &str)] = &[
        ("1.0", "1.0"),
        ("1e-7", "1e-07"),
        ("1e20", "1e+20"),
        ("0.1", "0.1"),
        ("1e16", "1e+16"),
        ("1234567890123456.0", "1234567890123456.0"),
        ("-0.0", "-0.0"),
        ("-0", "0"),
        ("5e-324", "5e-324"),
        ("1.7976931348623157e308", "1.7976931348623157e+308"),
        ("0.0001", "0.0001"),
        ("0.00001", "1e-05"),
        ("1e2", "100.0"),
        // Ties at the shortest length go to the even digit (issue 15): both inputs, and the
        // exact value between them, read as the double 27581622253495.0625.
        ("27581622253495.062", "27581622253495.062"),
        ("27581622253495.063", "27581622253495.062"),
        ("27581622253495.0625", "27581622253495.062"),
        ("1125899906842624.25", "1125899906842624.2"),
        ("1125899906842624.75", "1125899906842624.8"),
        ("2.98023223876953125e-08", "2.9802322387695312e-08"),
        ("123456789012345678901234567890", "123456789012345678901234567890"),
        ("-98765432109876543210", "-98765432109876543210"),
        (r#"{"b":1,"a":[true,false,null],"A":{}}"#, r#"{"A":{},"a":[true,false,null],"b":1}"#),
        (r#"["é","😀","\u0000\u001f\u007f","\"\\\/\b\f\n\r\t"]"#, r#"["\u00e9","\ud83d\ude00","\u0000\u001f\u007f","\"\\/\b\f\n\r\t"]"#),
        (r#"{"😀":1,"\uffff":2,"é":3,"B":4,"a":5}"#, r#"{"B":4,"a":5,"\u00e9":3,"\uffff":2,"\ud83d\ude00":1}"#),
        ("[]", "[]"),
        ("{}", "{}"),
        ("  [ 1 , 2 ]  ", "[1,2]"),
    ];
    for (input, expected) in cases {
        assert_eq!(parse_canonical(input).expect(input), *expected, "input {input}");
    }
}

#[test]
fn non_finite_numbers_and_invalid_json_are_refused() {
    assert!(matches!(parse_canonical("1e400"), Err(CanonError::NonFinite { .. })));
    match parse_canonical(r#"{"a":[0,-1e999]}"#) {
        Err(CanonError::NonFinite { path }) => assert_eq!(path, "$.a[1]"),
        other => panic!("expected NonFinite, got {other:?}"),
    }
    for bad in ["NaN", "Infinity", "-Infinity", "{", "", "[1,]", "'x'"] {
        assert!(matches!(parse_canonical(bad), Err(CanonError::InvalidJson { .. })), "{bad}");
    }
}

/// xorshift64*: a small deterministic generator for the corpus.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn gen_string(r: &mut Rng) -> String {
    let pool: &[char] = &['a', 'Z', '0', ' ', '"', '\\', '/', '\n', '\t', '\u{0}', '\u{1f}', '\u{7f}', 'é', 'ß', '中', '\u{ffff}', '😀', '𝄞', '\u{10ffff}'];
    (0..r.below(8)).map(|_| pool[r.below(pool.len() as u64) as usize]).collect()
}

/// JSON text for a random value, written so the literal is valid JSON.
fn gen_value(r: &mut Rng, depth: u32) -> String {
    let pick = if depth > 3 { r.below(6) } else { r.below(9) };
    match pick {
        0 => "null".into(),
        1 => if r.below(2) == 0 { "true".into() } else { "false".into() },
        2 => {
            // Integers, including ones far beyond 64 bits.
            let digits = 1 + r.below(45);
            let mut s = String::new();
            if r.below(2) == 0 {
                s.push('-');
            }
            s.push(char::from(b'1' + r.below(9) as u8));
            for _ in 1..digits {
                s.push(char::from(b'0' + r.below(10) as u8));
            }
            s
        }
        3 => loop {
            let f = f64::from_bits(r.next());
            if f.is_finite() {
                break format!("{f:e}");
            }
        },
        4 => {
            let f = (r.below(2_000_000) as f64 - 1_000_000.0) / 10f64.powi(r.below(12) as i32);
            format!("{f:?}")
        }
        5 => serde_json::to_string(&gen_string(r)).expect("string"),
        6 | 7 => {
            let items: Vec<String> = (0..r.below(5)).map(|_| gen_value(r, depth + 1)).collect();
            format!("[{}]", items.join(","))
        }
        _ => {
            let items: Vec<String> = (0..r.below(5))
                .map(|_| format!("{}:{}", serde_json::to_string(&gen_string(r)).expect("key"), gen_value(r, depth + 1)))
                .collect();
            format!("{{{}}}", items.join(","))
        }
    }
}

/// Python's canonical form of each line and its SHA-256, from `python3` itself.
fn python_canonical(corpus: &[String]) -> Vec<(String, String)> {
    let script = r#"
import sys, json, hashlib
for line in sys.stdin:
    out = json.dumps(json.loads(line), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    print(out + "\t" + hashlib.sha256(out.encode()).hexdigest())
"#;
    let mut child = match Command::new("python3").arg("-c").arg(script).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn() {
        Ok(c) => c,
        Err(e) => panic!("python3 is required to check canonical JSON against Python's json module: {e}"),
    };
    // Feed stdin from another thread so neither side blocks on a full pipe.
    let mut stdin = child.stdin.take().expect("stdin");
    let input = corpus.join("\n") + "\n";
    let feeder = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let output = child.wait_with_output().expect("python3 ran");
    feeder.join().expect("feeder").expect("write to python3");
    assert!(output.status.success(), "python3 failed");
    let text = String::from_utf8(output.stdout).expect("utf-8");
    let lines: Vec<(String, String)> = text
        .lines()
        .map(|line| {
            let (py, py_hash) = line.rsplit_once('\t').expect("tab");
            (py.to_owned(), py_hash.to_owned())
        })
        .collect();
    assert_eq!(lines.len(), corpus.len());
    lines
}

/// Asserts our canonical form of every line is Python's, byte for byte, hash included.
fn assert_same_as_python(corpus: &[String], python: &[(String, String)]) {
    for (input, (py, py_hash)) in corpus.iter().zip(python) {
        let ours = parse_canonical(input).unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(&ours, py, "input: {input}");
        assert_eq!(&sha256_hex(ours.as_bytes()), py_hash);
    }
}

fn assert_matches_python(corpus: &[String]) {
    assert_same_as_python(corpus, &python_canonical(corpus));
}

#[test]
fn generated_corpus_is_byte_identical_to_python() {
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    let corpus: Vec<String> = (0..3000).map(|_| gen_value(&mut r, 0)).collect();
    assert_matches_python(&corpus);
}

/// `n × 10^-scale` written out in positional notation (`27581622253495.0625`).
fn positional(n: u128, scale: u32) -> String {
    let digits = n.to_string();
    let scale = scale as usize;
    if digits.len() > scale {
        let (int, frac) = digits.split_at(digits.len() - scale);
        if frac.is_empty() { int.to_owned() } else { format!("{int}.{frac}") }
    } else {
        format!("0.{}{digits}", "0".repeat(scale - digits.len()))
    }
}

fn reads_as(text: &str, f: f64) -> bool {
    text.parse::<f64>().is_ok_and(|g| g.to_bits() == f.to_bits())
}

/// A double that lies exactly halfway between the two nearest strings of its shortest
/// round-trip length, both of which read back as it.
struct Tie {
    value: f64,
    /// The exact value, and the lower and upper candidate, in positional notation.
    exact: String,
    low: String,
    high: String,
    /// The candidate Python prints: the one whose last digit is even.
    even: String,
}

/// Every exact tie found among `per_shape` odd mantissas of each shape `t × 2^-(j+1)`.
///
/// Such a double equals `t × 5^(j+1) / 10^(j+1)`: its exact decimal expansion has j+1
/// decimals and ends in 5, so the j-decimal strings on either side are equally far from it.
/// It is a tie at the shortest length when both of those read back as the double and no
/// (j-1)-decimal string does. That needs the exact expansion to be at most 18 significant
/// digits, so j ≤ 24, and j ≥ 1 (the integers either side of a half-integer double are a
/// whole ulp or more away): ties exist only between 2^-25 and 2^51. Subnormal and other
/// tiny doubles, and those from 2^51 up (1e16, 1e17 and beyond), have none, only near ties
/// (see the test).
fn exact_ties(r: &mut Rng, per_shape: u32) -> Vec<(u32, Tie)> {
    let mut ties = Vec::new();
    // Short mantissas (t = 1, 3) come up more than once.
    let mut seen = std::collections::HashSet::new();
    for j in 1..=26u32 {
        // s: trailing zero bits of the 53-bit significand, so t has 53 - s bits.
        for s in 0..=52u32 {
            for _ in 0..per_shape {
                let t: u64 = if s == 52 { 1 } else { (1 << (52 - s)) | (r.next() & ((1 << (52 - s)) - 1)) | 1 };
                let value = t as f64 / (1u64 << (j + 1)) as f64;
                let exact = u128::from(t) * 5u128.pow(j + 1);
                let low = exact / 10;
                let shorter = exact / 100;
                let (low_text, high_text) = (positional(low, j), positional(low + 1, j));
                let is_tie = reads_as(&low_text, value)
                    && reads_as(&high_text, value)
                    && !reads_as(&positional(shorter, j - 1), value)
                    && !reads_as(&positional(shorter + 1, j - 1), value);
                if is_tie && seen.insert(value.to_bits()) {
                    let even = if low.is_multiple_of(2) { low_text.clone() } else { high_text.clone() };
                    ties.push((j, Tie { value, exact: positional(exact, j + 1), low: low_text, high: high_text, even }));
                }
            }
        }
    }
    ties
}

/// The significant digits of a numeral, without sign, point, exponent or outer zeros.
fn significant_digits(text: &str) -> String {
    let mantissa = text.split(['e', 'E']).next().unwrap_or(text);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    digits.trim_start_matches('0').trim_end_matches('0').to_owned()
}

#[test]
fn float_ties_go_to_the_even_digit_like_python() {
    let mut r = Rng(0x2545_f491_4f6c_dd1d);
    let ties = exact_ties(&mut r, 24);
    // The corpus must cover the class on purpose: every decimal count that has ties, and
    // both ways of breaking them (the lower candidate even, so rounding down; odd, so up).
    for j in 1..=22 {
        // With 21 or 22 decimals a tie's odd mantissa has only 3 to 7 bits: few such doubles.
        let floor = if j <= 20 { 10 } else { 1 };
        for parity in [0, 1] {
            let n = ties
                .iter()
                .filter(|(tj, t)| *tj == j && significant_digits(&t.low).bytes().last().map(|d| u32::from(d % 2)) == Some(parity))
                .count();
            assert!(n >= floor, "only {n} ties with {j} decimals whose lower candidate has parity {parity}");
        }
    }
    assert!(ties.iter().any(|(j, t)| *j == 24 && t.value == 2f64.powi(-25)), "2^-25 is a tie");
    assert!(ties.iter().all(|(j, _)| *j <= 24), "a tie with more than 24 decimals contradicts the reasoning in exact_ties");
    // Each tie written three ways, exactly and as either candidate; Python prints the even
    // candidate for all three.
    let tie_corpus: Vec<String> = ties.iter().flat_map(|(_, t)| [t.exact.clone(), t.low.clone(), t.high.clone()]).collect();
    let python = python_canonical(&tie_corpus);
    assert_same_as_python(&tie_corpus, &python);
    for (i, (_, tie)) in ties.iter().enumerate() {
        for (py, _) in &python[3 * i..3 * i + 3] {
            // Checks the corpus is the class it claims to be, whatever our formatter does.
            assert_eq!(significant_digits(py), significant_digits(&tie.even), "Python on the tie {} between {} and {}", tie.exact, tie.low, tie.high);
            assert!(reads_as(py, tie.value), "{py} does not read back as {}", tie.exact);
        }
    }
    // Inside documents too, and negative.
    let mut corpus: Vec<String> = ties.iter().take(200).map(|(_, t)| format!(r#"{{"v":[-{},{}]}}"#, t.exact, t.high)).collect();
    // Near ties at every magnitude: a 17- or 18-digit decimal ending in 5 is the midpoint of
    // two strings one digit shorter and reads as the double nearest to it, so when both
    // strings read back as that double the formatter must pick the nearer exactly. Exponents cover subnormals, tiny values,
    // 1e15-1e18 around 2^53, and the largest doubles; both parities of the last kept digit.
    let exponents = (-340..=-300).chain((-30..=-1).step_by(3)).chain(-1..=3).chain((-100..=290).step_by(13)).chain(286..=290);
    for exponent in exponents {
        for len in [16u32, 17] {
            for parity in [0, 1] {
                let kept = 10u64.pow(len - 1) + r.below(9 * 10u64.pow(len - 1));
                let kept = kept - kept % 2 + parity;
                // e.g. 12345678901234565e-20: `kept` and `kept + 1` are the candidates.
                corpus.push(format!("{kept}5e{exponent}"));
            }
        }
    }
    assert_matches_python(&corpus);
}
