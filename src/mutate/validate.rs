//! Syntax checks for the values users put in annotations and flags. Each check returns a short
//! description of the rule that failed, so callers can name the field and the fix around it.

use std::sync::LazyLock;

use regex::Regex;

/// The grammar of `github.com/distribution/reference` (the one the kubelet and registries use),
/// anchored. Groups: 1 = name, 2 = tag, 3 = digest.
static IMAGE_REFERENCE: LazyLock<Result<Regex, regex::Error>> = LazyLock::new(|| {
    let alnum = "[a-z0-9]+";
    let separator = "(?:[._]|__|[-]+)";
    let path_component = format!("{alnum}(?:{separator}{alnum})*");
    let domain_component = "(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
    let domain_name = format!(r"{domain_component}(?:\.{domain_component})*");
    let ipv6 = r"\[(?:[a-fA-F0-9:]+)\]";
    let host = format!("(?:{domain_name}|{ipv6})");
    let domain = format!("{host}(?::[0-9]+)?");
    let name = format!("(?:{domain}/)?{path_component}(?:/{path_component})*");
    let tag = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}";
    let digest = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}";
    // A constant pattern; the unit tests prove it compiles. Never a panic on the request path.
    Regex::new(&format!("^({name})(?::({tag}))?(?:@({digest}))?$"))
});

/// An image reference split into the parts the injector reasons about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageRef<'a> {
    pub name: &'a str,
    pub tag: Option<&'a str>,
    pub digest: Option<&'a str>,
}

impl ImageRef<'_> {
    /// A reference that does not pin a version: no digest, and no tag or the tag `latest`.
    pub fn is_unpinned(&self) -> bool {
        self.digest.is_none() && matches!(self.tag, None | Some("latest"))
    }
}

/// Parses an image reference such as `ghcr.io/org/migrations:v0.1.2` or `repo@sha256:...`.
pub fn image_reference(s: &str) -> Result<ImageRef<'_>, &'static str> {
    if s.is_empty() {
        return Err("must not be empty");
    }
    if s.len() > 4096 {
        return Err("is too long to be an image reference");
    }
    let grammar = IMAGE_REFERENCE
        .as_ref()
        .map_err(|_| "cannot be checked: the image reference grammar failed to compile")?;
    // is_match runs the regex's DFA; capture groups would need the slower backtracker, and the
    // parts are easy to split once the whole is known to be valid.
    if !grammar.is_match(s) {
        return Err("is not a valid image reference (expected [registry/]repository[:tag][@digest], repository in lower case)");
    }
    let (rest, digest) = match s.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (s, None),
    };
    // A ':' after the last '/' starts the tag; one before it is a registry port.
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].find(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if name.len() > 255 {
        return Err("has a repository name longer than 255 characters");
    }
    Ok(ImageRef { name, tag, digest })
}

/// RFC 1123 label, as Kubernetes requires for container and volume names.
pub fn dns_label(s: &str) -> Result<(), &'static str> {
    if s.is_empty() || s.len() > 63 {
        return Err("must be 1 to 63 characters");
    }
    if !label_chars(s) {
        return Err("must consist of lower-case letters, digits and '-', and start and end with a letter or digit");
    }
    Ok(())
}

/// RFC 1123 subdomain, as Kubernetes requires for Secret names.
pub fn dns_subdomain(s: &str) -> Result<(), &'static str> {
    if s.is_empty() || s.len() > 253 {
        return Err("must be 1 to 253 characters");
    }
    if !s.split('.').all(label_chars) {
        return Err("must consist of lower-case letters, digits, '-' and '.', each part starting and ending with a letter or digit");
    }
    Ok(())
}

fn label_chars(s: &str) -> bool {
    let b = s.as_bytes();
    let ok = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    match (b.first(), b.last()) {
        (Some(first), Some(last)) => ok(first) && ok(last) && b.iter().all(|c| ok(c) || *c == b'-'),
        _ => false,
    }
}

/// Longest path accepted (PATH_MAX is 4096; real mount paths are far shorter).
const MAX_PATH: usize = 1024;

/// An absolute path usable as a volumeMount's mountPath.
pub fn mount_path(s: &str) -> Result<(), &'static str> {
    if !s.starts_with('/') {
        return Err("must be an absolute path");
    }
    if s.len() > MAX_PATH {
        return Err("is longer than 1024 bytes");
    }
    if s.chars().any(char::is_control) {
        return Err("must not contain control characters (NUL, newline, escape, ...)");
    }
    // Mounting over the whole root filesystem (or a spelling of it) hides the image.
    if s.split('/').all(|part| part.is_empty() || part == ".") {
        return Err("must not be the root directory");
    }
    if s.contains(':') {
        return Err("must not contain ':'");
    }
    if s.split('/').any(|part| part == "..") {
        return Err("must not contain '..'");
    }
    Ok(())
}

/// A file name relative to the mount path (it may name a key of the Secret, or a sub-path).
pub fn relative_file(s: &str) -> Result<(), &'static str> {
    if s.is_empty() {
        return Err("must not be empty");
    }
    if s.starts_with('/') {
        return Err("must be relative to the mount path");
    }
    if s.len() > MAX_PATH {
        return Err("is longer than 1024 bytes");
    }
    if s.chars().any(char::is_control) {
        return Err("must not contain control characters (NUL, newline, escape, ...)");
    }
    if s.split('/').any(|part| part == ".." || part.is_empty()) {
        return Err("must not contain '..' or empty path segments");
    }
    if s.chars().any(char::is_whitespace) {
        return Err("must not contain whitespace");
    }
    Ok(())
}

/// A name usable on a command line without quoting surprises (the Atlas `--env`).
pub fn word(s: &str) -> Result<(), &'static str> {
    if s.is_empty() {
        return Err("must not be empty");
    }
    if s.len() > 253 {
        return Err("is longer than 253 characters");
    }
    if s.chars().any(char::is_whitespace) {
        return Err("must not contain whitespace");
    }
    if s.chars().any(char::is_control) {
        return Err("must not contain control characters (NUL, escape, ...)");
    }
    Ok(())
}

/// A Go duration as Atlas's flags take it (`10s`, `5m`, `1h30m`, `500ms`), positive.
pub fn duration(s: &str) -> Result<(), &'static str> {
    const BAD: &str = "is not a duration (examples: 90s, 5m, 1h30m)";
    if s.is_empty() || s.len() > 64 {
        return Err(BAD);
    }
    let mut rest = s;
    let mut positive = false;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or(BAD)?;
        let (number, tail) = rest.split_at(digits);
        if number.is_empty() || number.starts_with('.') || number.matches('.').count() > 1 {
            return Err(BAD);
        }
        positive |= number.bytes().any(|b| (b'1'..=b'9').contains(&b));
        let unit = ["ns", "us", "µs", "ms", "s", "m", "h"]
            .into_iter()
            .filter(|u| tail.starts_with(u))
            .max_by_key(|u| u.len())
            .ok_or(BAD)?;
        rest = &tail[unit.len()..];
    }
    if !positive {
        return Err("must be more than zero");
    }
    Ok(())
}

/// A URL given to a tool on its command line: a scheme, no whitespace or control characters.
pub fn url(s: &str) -> Result<(), &'static str> {
    let Some((scheme, rest)) = s.split_once("://") else {
        return Err("is not a URL (scheme://...)");
    };
    if scheme.is_empty()
        || !scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        || rest.is_empty()
    {
        return Err("is not a URL (scheme://...)");
    }
    if s.len() > MAX_PATH {
        return Err("is longer than 1024 bytes");
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain whitespace or control characters");
    }
    Ok(())
}

/// A key of a Secret's data, as Kubernetes allows them.
pub fn secret_key(s: &str) -> Result<(), &'static str> {
    if s.is_empty() || s.len() > 253 {
        return Err("must be 1 to 253 characters");
    }
    if !s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
    {
        return Err("must consist of letters, digits, '-', '_' and '.'");
    }
    if s == "." || s.starts_with("..") {
        return Err("must not be '.' or start with '..'");
    }
    Ok(())
}

/// Parses a Kubernetes resource quantity (`500m`, `1.5`, `128Mi`, `1e3`) into nano-units, so two
/// spellings of one amount compare equal (the API server stores quantities canonicalised).
pub fn quantity(s: &str) -> Result<i128, &'static str> {
    const BAD: &str = "is not a Kubernetes quantity (examples: 100m, 0.5, 128Mi, 1Gi)";
    let (number, suffix) = split_quantity(s).ok_or(BAD)?;
    let (scale_num, scale_den): (i128, i128) = match suffix {
        "" => (1, 1),
        "n" => (1, 1_000_000_000),
        "u" => (1, 1_000_000),
        "m" => (1, 1_000),
        "k" => (1_000, 1),
        "M" => (1_000_000, 1),
        "G" => (1_000_000_000, 1),
        "T" => (1_000_000_000_000, 1),
        "P" => (1_000_000_000_000_000, 1),
        "E" => (1_000_000_000_000_000_000, 1),
        "Ki" => (1 << 10, 1),
        "Mi" => (1 << 20, 1),
        "Gi" => (1 << 30, 1),
        "Ti" => (1 << 40, 1),
        "Pi" => (1 << 50, 1),
        "Ei" => (1 << 60, 1),
        exp if exp.starts_with(['e', 'E']) => {
            let e: i32 = exp[1..].parse().map_err(|_| BAD)?;
            if !(-9..=18).contains(&e) {
                return Err(BAD);
            }
            if e >= 0 {
                (10i128.pow(e.unsigned_abs()), 1)
            } else {
                (1, 10i128.pow(e.unsigned_abs()))
            }
        }
        _ => return Err(BAD),
    };
    let (negative, digits) = match number.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, number.strip_prefix('+').unwrap_or(number)),
    };
    let (int_part, frac_part) = digits.split_once('.').unwrap_or((digits, ""));
    if (int_part.is_empty() && frac_part.is_empty())
        || !int_part.bytes().all(|c| c.is_ascii_digit())
        || !frac_part.bytes().all(|c| c.is_ascii_digit())
        || int_part.len() > 19
    {
        return Err(BAD);
    }
    // Value in nano-units: (int.frac) * 1e9 * scale, rounded up like Kubernetes does.
    let frac_digits = frac_part.len().min(18);
    let mantissa: i128 = format!("{int_part}{}", &frac_part[..frac_digits])
        .parse::<i128>()
        .unwrap_or(0);
    let denominator = 10i128.pow(frac_digits as u32) * scale_den;
    let numerator = mantissa
        .checked_mul(1_000_000_000)
        .and_then(|v| v.checked_mul(scale_num))
        .ok_or(BAD)?;
    let nanos = numerator.checked_add(denominator - 1).ok_or(BAD)? / denominator;
    if negative {
        return Err("must not be negative");
    }
    Ok(nanos)
}

fn split_quantity(s: &str) -> Option<(&str, &str)> {
    let end = s
        .char_indices()
        .find(|&(_, c)| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .map_or(s.len(), |(i, _)| i);
    let (number, suffix) = s.split_at(end);
    (!number.is_empty()).then_some((number, suffix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references() {
        let r = image_reference("ghcr.io/repo/migrations:v0.1.2").unwrap();
        assert_eq!(r.name, "ghcr.io/repo/migrations");
        assert_eq!(r.tag, Some("v0.1.2"));
        assert!(!r.is_unpinned());
        assert!(image_reference("localhost:5000/a/b").unwrap().is_unpinned());
        assert!(image_reference("busybox:latest").unwrap().is_unpinned());
        let digest = format!("repo@sha256:{}", "a".repeat(64));
        let r = image_reference(&digest).unwrap();
        assert!(!r.is_unpinned());
        assert_eq!(r.tag, None);
        let r = image_reference("[::1]:5000/repo:1").unwrap();
        assert_eq!((r.name, r.tag), ("[::1]:5000/repo", Some("1")));
        let r = image_reference("localhost:5000/a/b:v2").unwrap();
        assert_eq!((r.name, r.tag), ("localhost:5000/a/b", Some("v2")));
        for bad in [
            "",
            "repo/UPPER",
            "repo:",
            "repo:tag with space",
            "-repo",
            "repo@sha256:abc",
            "a//b",
            "repo:tag@",
        ] {
            assert!(image_reference(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn names() {
        assert!(dns_label("migrate").is_ok());
        assert!(dns_label("Migrate").is_err());
        assert!(dns_label("-a").is_err());
        assert!(dns_label(&"a".repeat(64)).is_err());
        assert!(dns_subdomain("atlas.project-1").is_ok());
        assert!(dns_subdomain("atlas..project").is_err());
        assert!(mount_path("/etc/atlas").is_ok());
        assert!(mount_path("etc").is_err());
        assert!(mount_path("/a/../b").is_err());
        assert!(relative_file("atlas.hcl").is_ok());
        assert!(relative_file("/atlas.hcl").is_err());
        assert!(relative_file("../x").is_err());
        assert!(word("k8s").is_ok());
        assert!(word("k 8s").is_err());
    }

    #[test]
    fn durations_urls_and_secret_keys() {
        for ok in ["10s", "5m", "1h30m", "500ms", "1.5h", "2us"] {
            assert_eq!(duration(ok), Ok(()), "{ok}");
        }
        for bad in ["", "5", "m", "0s", "-5m", "5 m", "5x", ".5s", "1..5s"] {
            assert!(duration(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(url("file:///migrations").is_ok() && url("atlas://app?tag=latest").is_ok());
        assert!(url("/migrations").is_err() && url("file:// x").is_err());
        assert!(secret_key("uri").is_ok() && secret_key("a/b").is_err() && secret_key("").is_err());
        assert!(
            secret_key(".").is_err() && secret_key("..x").is_err() && secret_key(".env").is_ok()
        );
    }

    #[test]
    fn quantities_compare_by_value() {
        assert_eq!(quantity("500m"), quantity("0.5"));
        assert_eq!(quantity("1"), quantity("1000m"));
        assert_eq!(quantity("1Ki"), quantity("1024"));
        assert_eq!(quantity("1e3"), quantity("1k"));
        assert_eq!(
            quantity("128Mi").unwrap(),
            128 * 1024 * 1024 * 1_000_000_000
        );
        assert_eq!(quantity("1n").unwrap(), 1);
        for bad in ["", "m", "1x", "1.2.3", "abc", "-1", "1e99", "1 Gi"] {
            assert!(quantity(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
