//! A checked, read-only view of the few X.509 fields the mesh needs: the
//! subject's common name, its public key, its DNS subject alternative
//! names and its validity window (for renewal before expiry). Untrusted bytes go through [`Reader`], whose every step checks
//! lengths, so no input can make it panic. It is not a validator: chains,
//! signatures and validity are webpki's job.

use super::PkiError;

const TAG_BOOLEAN: u8 = 0x01;
const TAG_INTEGER: u8 = 0x02;
const TAG_BIT_STRING: u8 = 0x03;
const TAG_OCTET_STRING: u8 = 0x04;
const TAG_OID: u8 = 0x06;
const TAG_UTF8_STRING: u8 = 0x0C;
const TAG_PRINTABLE_STRING: u8 = 0x13;
const TAG_IA5_STRING: u8 = 0x16;
const TAG_UTC_TIME: u8 = 0x17;
const TAG_GENERALIZED_TIME: u8 = 0x18;
const TAG_SEQUENCE: u8 = 0x30;
const TAG_SET: u8 = 0x31;
/// `[0] EXPLICIT Version`.
const TAG_VERSION: u8 = 0xA0;
/// `[1] IMPLICIT issuerUniqueID`.
const TAG_ISSUER_UID: u8 = 0x81;
/// `[2] IMPLICIT subjectUniqueID`.
const TAG_SUBJECT_UID: u8 = 0x82;
/// `[3] EXPLICIT Extensions`.
const TAG_EXTENSIONS: u8 = 0xA3;
/// `dNSName [2] IMPLICIT IA5String` inside GeneralNames.
const TAG_DNS_NAME: u8 = 0x82;

/// 1.3.101.112, id-Ed25519 (RFC 8410).
pub(crate) const OID_ED25519: &[u8] = &[0x2B, 0x65, 0x70];
/// 2.5.4.3, id-at-commonName.
const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
/// 2.5.29.17, id-ce-subjectAltName.
const OID_SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1D, 0x11];

/// Longest length field accepted: four bytes is far beyond any certificate.
const MAX_LENGTH_BYTES: usize = 4;

/// Reads DER tag-length-value items from a byte slice, front to back.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn peek_tag(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    /// The next item's tag and contents.
    fn any(&mut self) -> Result<(u8, &'a [u8]), PkiError> {
        let malformed = PkiError::MalformedCertificate;
        let (&tag, rest) = self.rest.split_first().ok_or(malformed("truncated"))?;
        if tag & 0x1F == 0x1F {
            return Err(malformed("multi-byte tags are not used in certificates"));
        }
        let (&first, mut rest) = rest.split_first().ok_or(malformed("truncated"))?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let count = usize::from(first & 0x7F);
            if count == 0 || count > MAX_LENGTH_BYTES || rest.len() < count {
                return Err(malformed("bad length"));
            }
            let (digits, tail) = rest.split_at(count);
            rest = tail;
            if digits[0] == 0 {
                return Err(malformed("length is not minimally encoded"));
            }
            let len = digits
                .iter()
                .fold(0usize, |acc, &d| (acc << 8) | usize::from(d));
            if len < 0x80 {
                return Err(malformed("length is not minimally encoded"));
            }
            len
        };
        if rest.len() < len {
            return Err(malformed("truncated"));
        }
        let (value, tail) = rest.split_at(len);
        self.rest = tail;
        Ok((tag, value))
    }

    /// The contents of the next item, which must carry `tag`.
    pub(crate) fn expect(&mut self, tag: u8, what: &'static str) -> Result<&'a [u8], PkiError> {
        match self.any()? {
            (found, value) if found == tag => Ok(value),
            _ => Err(PkiError::MalformedCertificate(what)),
        }
    }

    /// The next item as a UTCTime (`YYMMDDHHMMSSZ`, years 1950 to 2049)
    /// or a GeneralizedTime (`YYYYMMDDHHMMSSZ`), the two forms RFC 5280
    /// allows for validity, as seconds since the Unix epoch.
    fn time(&mut self) -> Result<i64, PkiError> {
        let bad = PkiError::MalformedCertificate("bad validity time");
        let (tag, value) = self.any()?;
        let (year_digits, rest) = match tag {
            TAG_UTC_TIME => (2, value),
            TAG_GENERALIZED_TIME => (4, value),
            _ => return Err(bad),
        };
        if rest.len() != year_digits + 11 || rest.last() != Some(&b'Z') {
            return Err(bad);
        }
        let digits = &rest[..rest.len() - 1];
        if !digits.iter().all(u8::is_ascii_digit) {
            return Err(bad);
        }
        let number = |from: usize, len: usize| {
            digits[from..from + len]
                .iter()
                .fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0'))
        };
        let mut year = number(0, year_digits);
        if year_digits == 2 {
            year += if year < 50 { 2000 } else { 1900 };
        }
        let at = year_digits;
        let (month, day) = (number(at, 2), number(at + 2, 2));
        let (hour, minute, second) = (number(at + 4, 2), number(at + 6, 2), number(at + 8, 2));
        let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
        let month_days = [
            31,
            if leap { 29 } else { 28 },
            31,
            30,
            31,
            30,
            31,
            31,
            30,
            31,
            30,
            31,
        ];
        let valid = (1..=12).contains(&month)
            && day >= 1
            && day <= month_days[(month.clamp(1, 12) - 1) as usize]
            && hour < 24
            && minute < 60
            && second < 60;
        if !valid {
            return Err(bad);
        }
        Ok(days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second)
    }

    /// The contents of the next item if it carries `tag`.
    fn optional(&mut self, tag: u8) -> Result<Option<&'a [u8]>, PkiError> {
        if self.peek_tag() == Some(tag) {
            self.any().map(|(_, value)| Some(value))
        } else {
            Ok(None)
        }
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`), for years 0 to 9999.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let shifted_month = (month + 9) % 12;
    let day_of_year = (153 * shifted_month + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The parts of a certificate the mesh reads.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CertView<'a> {
    /// Contents of the `Validity` sequence.
    validity: &'a [u8],
    /// Contents of the subject `Name` sequence.
    subject: &'a [u8],
    /// Contents of the SubjectPublicKeyInfo's algorithm OID.
    key_algorithm: &'a [u8],
    /// Whether the algorithm identifier carried parameters.
    key_algorithm_has_params: bool,
    /// The subject public key, BIT STRING contents (unused-bits byte first).
    key_bits: &'a [u8],
    /// Contents of the `Extensions` sequence, when present.
    extensions: Option<&'a [u8]>,
}

impl<'a> CertView<'a> {
    /// Checks the framing of a DER certificate down to its extensions.
    pub(crate) fn parse(der: &'a [u8]) -> Result<Self, PkiError> {
        let mut outer = Reader::new(der);
        let cert = outer.expect(TAG_SEQUENCE, "not a certificate")?;
        if !outer.is_empty() {
            return Err(PkiError::MalformedCertificate("trailing bytes"));
        }
        let mut cert = Reader::new(cert);
        let tbs = cert.expect(TAG_SEQUENCE, "no to-be-signed part")?;
        cert.expect(TAG_SEQUENCE, "no signature algorithm")?;
        cert.expect(TAG_BIT_STRING, "no signature")?;
        if !cert.is_empty() {
            return Err(PkiError::MalformedCertificate("trailing fields"));
        }

        let mut tbs = Reader::new(tbs);
        tbs.optional(TAG_VERSION)?;
        tbs.expect(TAG_INTEGER, "no serial number")?;
        tbs.expect(TAG_SEQUENCE, "no signature algorithm")?;
        tbs.expect(TAG_SEQUENCE, "no issuer")?;
        let validity = tbs.expect(TAG_SEQUENCE, "no validity")?;
        let subject = tbs.expect(TAG_SEQUENCE, "no subject")?;
        let spki = tbs.expect(TAG_SEQUENCE, "no subject public key")?;
        tbs.optional(TAG_ISSUER_UID)?;
        tbs.optional(TAG_SUBJECT_UID)?;
        let extensions = match tbs.optional(TAG_EXTENSIONS)? {
            Some(wrapped) => {
                let mut wrapped = Reader::new(wrapped);
                let inner = wrapped.expect(TAG_SEQUENCE, "bad extensions")?;
                if !wrapped.is_empty() {
                    return Err(PkiError::MalformedCertificate("bad extensions"));
                }
                Some(inner)
            }
            None => None,
        };
        if !tbs.is_empty() {
            return Err(PkiError::MalformedCertificate("unexpected fields"));
        }

        let mut spki = Reader::new(spki);
        let mut algorithm = Reader::new(spki.expect(TAG_SEQUENCE, "no key algorithm")?);
        let key_bits = spki.expect(TAG_BIT_STRING, "no key bits")?;
        if !spki.is_empty() {
            return Err(PkiError::MalformedCertificate("bad subject public key"));
        }
        let key_algorithm = algorithm.expect(TAG_OID, "no key algorithm")?;
        Ok(Self {
            validity,
            subject,
            key_algorithm,
            key_algorithm_has_params: !algorithm.is_empty(),
            key_bits,
            extensions,
        })
    }

    /// The raw Ed25519 public key, if that is the certificate's key type.
    pub(crate) fn ed25519_public_key(&self) -> Result<[u8; 32], PkiError> {
        // RFC 8410: the algorithm identifier has no parameters and the key
        // is 32 bytes with no unused bits.
        if self.key_algorithm != OID_ED25519 || self.key_algorithm_has_params {
            return Err(PkiError::NotEd25519);
        }
        match self.key_bits.split_first() {
            Some((0, key)) => key
                .try_into()
                .map_err(|_| PkiError::MalformedCertificate("bad Ed25519 key length")),
            _ => Err(PkiError::MalformedCertificate("bad key bit string")),
        }
    }

    /// `notBefore` and `notAfter`, in seconds since the Unix epoch.
    pub(crate) fn validity(&self) -> Result<(i64, i64), PkiError> {
        let mut validity = Reader::new(self.validity);
        let not_before = validity.time()?;
        let not_after = validity.time()?;
        if !validity.is_empty() {
            return Err(PkiError::MalformedCertificate("bad validity"));
        }
        Ok((not_before, not_after))
    }

    /// The first common name of the subject.
    pub(crate) fn common_name(&self) -> Result<Option<&'a str>, PkiError> {
        let mut rdns = Reader::new(self.subject);
        while !rdns.is_empty() {
            let mut set = Reader::new(rdns.expect(TAG_SET, "bad subject")?);
            while !set.is_empty() {
                let mut attribute = Reader::new(set.expect(TAG_SEQUENCE, "bad subject")?);
                let oid = attribute.expect(TAG_OID, "bad subject")?;
                let (tag, value) = attribute.any()?;
                if oid != OID_COMMON_NAME {
                    continue;
                }
                return match tag {
                    TAG_UTF8_STRING | TAG_PRINTABLE_STRING | TAG_IA5_STRING => {
                        std::str::from_utf8(value)
                            .map(Some)
                            .map_err(|_| PkiError::MalformedCertificate("common name is not text"))
                    }
                    _ => Err(PkiError::MalformedCertificate(
                        "common name has an unsupported string type",
                    )),
                };
            }
        }
        Ok(None)
    }

    /// Every DNS name in the subject alternative names, in order.
    pub(crate) fn dns_names(&self) -> Result<Vec<&'a str>, PkiError> {
        let mut names = Vec::new();
        let Some(extensions) = self.extensions else {
            return Ok(names);
        };
        let mut extensions = Reader::new(extensions);
        while !extensions.is_empty() {
            let mut extension = Reader::new(extensions.expect(TAG_SEQUENCE, "bad extension")?);
            let oid = extension.expect(TAG_OID, "bad extension")?;
            extension.optional(TAG_BOOLEAN)?;
            let value = extension.expect(TAG_OCTET_STRING, "bad extension")?;
            if oid != OID_SUBJECT_ALT_NAME {
                continue;
            }
            let mut outer = Reader::new(value);
            let mut general_names = Reader::new(outer.expect(TAG_SEQUENCE, "bad alt names")?);
            while !general_names.is_empty() {
                let (tag, name) = general_names.any()?;
                if tag == TAG_DNS_NAME {
                    let name = std::str::from_utf8(name)
                        .map_err(|_| PkiError::MalformedCertificate("DNS name is not text"))?;
                    names.push(name);
                }
            }
        }
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_must_be_minimal_and_complete() {
        // Long form for a short length.
        assert!(Reader::new(&[0x30, 0x81, 0x05, 0, 0, 0, 0, 0])
            .any()
            .is_err());
        // Leading zero in a long length.
        assert!(Reader::new(&[0x30, 0x82, 0x00, 0x80]).any().is_err());
        // Indefinite length.
        assert!(Reader::new(&[0x30, 0x80, 0x00, 0x00]).any().is_err());
        // Contents shorter than announced.
        assert!(Reader::new(&[0x04, 0x03, 1, 2]).any().is_err());
        let mut ok = Reader::new(&[0x04, 0x02, 1, 2, 0x05, 0x00]);
        assert_eq!(ok.any().unwrap(), (0x04, &[1u8, 2][..]));
        assert_eq!(ok.any().unwrap(), (0x05, &[][..]));
        assert!(ok.is_empty());
    }

    fn time(bytes: &[u8]) -> Result<i64, PkiError> {
        Reader::new(bytes).time()
    }

    #[test]
    fn validity_times_read_both_forms_and_refuse_the_rest() {
        let utc = |text: &[u8]| {
            let mut der = vec![TAG_UTC_TIME, text.len() as u8];
            der.extend_from_slice(text);
            time(&der)
        };
        let general = |text: &[u8]| {
            let mut der = vec![TAG_GENERALIZED_TIME, text.len() as u8];
            der.extend_from_slice(text);
            time(&der)
        };
        assert_eq!(utc(b"700101000000Z"), Ok(0));
        assert_eq!(utc(b"300101000000Z"), Ok(1_893_456_000));
        assert_eq!(utc(b"491231235959Z"), Ok(2_524_607_999));
        assert_eq!(utc(b"500101000000Z"), Ok(-631_152_000));
        assert_eq!(general(b"20240229120000Z"), Ok(1_709_208_000));
        assert_eq!(general(b"99991231235959Z"), Ok(253_402_300_799));
        for bad in [
            &b"700101000000"[..],
            b"7001010000000Z",
            b"701301000000Z",
            b"700132000000Z",
            b"700229000000Z",
            b"700101240000Z",
            b"700101006000Z",
            b"70010100000aZ",
            b"700101000000+",
        ] {
            assert!(utc(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        assert!(general(b"20230229000000Z").is_err());
        assert!(time(&[0x04, 1, 0]).is_err());
        assert!(time(&[]).is_err());
    }

    #[test]
    fn huge_lengths_are_refused_not_allocated() {
        let bytes = [0x30, 0x84, 0xFF, 0xFF, 0xFF, 0xFF, 0x00];
        assert!(Reader::new(&bytes).any().is_err());
        assert!(Reader::new(&[0x30, 0x85, 1, 1, 1, 1, 1]).any().is_err());
    }
}
