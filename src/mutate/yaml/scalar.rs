//! One scalar resolved as go-yaml v2 does (its `resolve.go`), which is what kubectl uses: the
//! YAML 1.1 booleans and nulls of a fixed table, integers in Go's `ParseInt(s, 0, 64)` syntax
//! after removing `_` (so `0755` is octal, `0x1F` hex, `1_000` a thousand), floats of a fixed
//! pattern. Timestamps stay strings (v2 keeps them as written when decoding into `interface{}`)
//! and so does sexagesimal `1:20`, which v2 does not implement.

/// What a scalar means.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Null,
    Bool(bool),
    Int(i64),
    Uint(u64),
    Float(f64),
    Str(String),
    /// A plain `<<` key.
    Merge,
}

const TRUE: &[&str] = &[
    "y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON",
];
const FALSE: &[&str] = &[
    "n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF",
];
const NULL: &[&str] = &["", "~", "null", "Null", "NULL"];

/// Resolves a plain (unquoted, untagged) scalar.
pub fn resolve_plain(s: &str) -> Scalar {
    if TRUE.contains(&s) {
        return Scalar::Bool(true);
    }
    if FALSE.contains(&s) {
        return Scalar::Bool(false);
    }
    if NULL.contains(&s) {
        return Scalar::Null;
    }
    match s {
        ".nan" | ".NaN" | ".NAN" => return Scalar::Float(f64::NAN),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Scalar::Float(f64::INFINITY)
        }
        "-.inf" | "-.Inf" | "-.INF" => return Scalar::Float(f64::NEG_INFINITY),
        "<<" => return Scalar::Merge,
        _ => {}
    }
    let first = s.as_bytes().first().copied().unwrap_or(b' ');
    match first {
        // v2 hands these to strconv.ParseFloat, whose decimal form is this.
        b'.' if is_dot_float(s) => {
            if let Ok(f) = s.parse::<f64>() {
                return Scalar::Float(f);
            }
        }
        b'0'..=b'9' | b'+' | b'-' => {
            let plain: String = s.chars().filter(|c| *c != '_').collect();
            if let Some(n) = go_parse_int(&plain) {
                return n;
            }
            if is_yaml_float(&plain) {
                if let Ok(f) = plain.parse::<f64>() {
                    return Scalar::Float(f);
                }
            }
        }
        _ => {}
    }
    Scalar::Str(s.to_owned())
}

/// `^\.[0-9]+([eE][-+]?[0-9]+)?$`
fn is_dot_float(s: &str) -> bool {
    let rest = &s[1..];
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    digits > 0 && is_exponent(&rest[digits..])
}

/// `([eE][-+]?[0-9]+)?$`
fn is_exponent(s: &str) -> bool {
    if s.is_empty() {
        return true;
    }
    let Some(rest) = s.strip_prefix(['e', 'E']) else {
        return false;
    };
    let rest = rest.strip_prefix(['+', '-']).unwrap_or(rest);
    !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit())
}

/// v2's `yamlStyleFloat`: `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`.
fn is_yaml_float(s: &str) -> bool {
    let s = s.strip_prefix(['+', '-']).unwrap_or(s);
    if let Some(rest) = s.strip_prefix('.') {
        return is_dot_float(&format!(".{rest}"));
    }
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return false;
    }
    let mut rest = &s[digits..];
    if let Some(r) = rest.strip_prefix('.') {
        let frac = r.bytes().take_while(u8::is_ascii_digit).count();
        rest = &r[frac..];
    }
    is_exponent(rest)
}

/// Go's `strconv.ParseInt(s, 0, 64)`, then `ParseUint(s, 0, 64)` (no sign) for larger values.
fn go_parse_int(s: &str) -> Option<Scalar> {
    let (negative, unsigned) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let signed = unsigned.len() != s.len();
    let lower = unsigned.get(..2).map(str::to_ascii_lowercase);
    let (radix, digits) = match lower.as_deref() {
        Some("0x") => (16, &unsigned[2..]),
        Some("0b") => (2, &unsigned[2..]),
        Some("0o") => (8, &unsigned[2..]),
        _ if unsigned.len() > 1 && unsigned.starts_with('0') => (8, &unsigned[1..]),
        _ => (10, unsigned),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = u128::from_str_radix(digits, radix).ok()?;
    if negative {
        let value = -i128::try_from(magnitude).ok()?;
        return i64::try_from(value).ok().map(Scalar::Int);
    }
    if let Ok(v) = i64::try_from(magnitude) {
        return Some(Scalar::Int(v));
    }
    if signed {
        return None; // ParseUint takes no sign.
    }
    u64::try_from(magnitude).ok().map(Scalar::Uint)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Scalar::*;

    #[test]
    fn yaml_1_1_as_go_yaml_v2() {
        for (text, want) in [
            ("yes", Bool(true)),
            ("Y", Bool(true)),
            ("off", Bool(false)),
            ("NO", Bool(false)),
            ("yEs", Str("yEs".into())),
            ("0755", Int(493)),
            ("0o17", Int(15)),
            ("0x1F", Int(31)),
            ("-0b101", Int(-5)),
            ("1_000", Int(1000)),
            ("+12", Int(12)),
            ("08", Float(8.0)),
            ("1.5e3", Float(1500.0)),
            (".5", Float(0.5)),
            ("1.", Float(1.0)),
            ("1:20", Str("1:20".into())),
            ("2001-12-14", Str("2001-12-14".into())),
            ("~", Null),
            ("", Null),
            ("18446744073709551615", Uint(u64::MAX)),
            ("-9223372036854775808", Int(i64::MIN)),
            ("0x", Str("0x".into())),
            ("1e", Str("1e".into())),
            ("-", Str("-".into())),
            ("<<", Merge),
        ] {
            assert_eq!(resolve_plain(text), want, "{text}");
        }
        assert!(matches!(resolve_plain(".NaN"), Float(f) if f.is_nan()));
    }
}
