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

#[test]
fn generated_corpus_is_byte_identical_to_python() {
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    let corpus: Vec<String> = (0..3000).map(|_| gen_value(&mut r, 0)).collect();
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
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), corpus.len());
    for (input, line) in corpus.iter().zip(lines) {
        let (py, py_hash) = line.rsplit_once('\t').expect("tab");
        let ours = parse_canonical(input).unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(ours, py, "input: {input}");
        assert_eq!(sha256_hex(ours.as_bytes()), py_hash);
    }
}
