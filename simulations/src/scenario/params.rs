//! Scenario parameters: declared with a default and a range, overridden on
//! the command line as `key=value`, refused with a clear reason when unknown
//! or impossible.

use std::collections::BTreeMap;

use crate::SimError;

/// A parameter a scenario accepts.
#[derive(Debug, Clone, Copy)]
pub struct ParamSpec {
    /// Its name.
    pub name: &'static str,
    /// Its default, as text.
    pub default: &'static str,
    /// What it means, with its unit.
    pub about: &'static str,
    /// Allowed values: a numeric range, or a list of words.
    pub allowed: Allowed,
}

/// The values a parameter may take.
#[derive(Debug, Clone, Copy)]
pub enum Allowed {
    /// A number in `[min, max]`.
    Range(f64, f64),
    /// One of these words.
    OneOf(&'static [&'static str]),
}

/// Parameter values after parsing and validation.
#[derive(Debug, Clone)]
pub struct Params {
    values: BTreeMap<&'static str, String>,
}

fn param_error(name: &str, reason: impl Into<String>) -> SimError {
    SimError::Param {
        name: name.to_owned(),
        reason: reason.into(),
    }
}

impl Params {
    /// Applies `overrides` (`key=value`) to the defaults of `specs`.
    ///
    /// # Errors
    /// [`SimError::Param`] for an unknown key, a missing `=`, or a value
    /// outside what the parameter allows.
    pub fn parse(specs: &'static [ParamSpec], overrides: &[String]) -> Result<Self, SimError> {
        let mut values: BTreeMap<&'static str, String> = specs
            .iter()
            .map(|s| (s.name, s.default.to_owned()))
            .collect();
        for item in overrides {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| param_error(item, "expected key=value"))?;
            let spec = specs.iter().find(|s| s.name == key.trim()).ok_or_else(|| {
                let known: Vec<&str> = specs.iter().map(|s| s.name).collect();
                param_error(
                    key,
                    format!("unknown; this scenario takes {}", known.join(", ")),
                )
            })?;
            values.insert(spec.name, value.trim().to_owned());
        }
        for spec in specs {
            check(spec, &values[spec.name])?;
        }
        Ok(Self { values })
    }

    /// A numeric parameter.
    ///
    /// # Panics
    /// If the scenario asks for a parameter it did not declare (a bug).
    pub fn f64(&self, name: &str) -> f64 {
        self.values[name].parse().expect("validated in parse")
    }

    /// A numeric parameter as an integer (truncated).
    pub fn u64(&self, name: &str) -> u64 {
        self.f64(name) as u64
    }

    /// A word parameter.
    pub fn word(&self, name: &str) -> &str {
        &self.values[name]
    }
}

fn check(spec: &ParamSpec, value: &str) -> Result<(), SimError> {
    match spec.allowed {
        Allowed::Range(min, max) => {
            let number: f64 = value
                .parse()
                .map_err(|_| param_error(spec.name, format!("{value:?} is not a number")))?;
            if !number.is_finite() || number < min || number > max {
                return Err(param_error(
                    spec.name,
                    format!("{value} is outside [{min}, {max}]"),
                ));
            }
        }
        Allowed::OneOf(words) => {
            if !words.contains(&value) {
                return Err(param_error(
                    spec.name,
                    format!("{value:?} is not one of {}", words.join(", ")),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPECS: &[ParamSpec] = &[
        ParamSpec {
            name: "loss",
            default: "0.01",
            about: "loss probability",
            allowed: Allowed::Range(0.0, 1.0),
        },
        ParamSpec {
            name: "nat",
            default: "cone",
            about: "NAT kind",
            allowed: Allowed::OneOf(&["cone", "symmetric"]),
        },
    ];

    #[test]
    fn defaults_and_overrides() {
        let params = Params::parse(SPECS, &["loss=0.5".to_owned()]).unwrap();
        assert_eq!(params.f64("loss"), 0.5);
        assert_eq!(params.word("nat"), "cone");
    }

    #[test]
    fn impossible_values_are_refused_with_the_reason() {
        let cases = [
            ("loss=1.5", "parameter loss: 1.5 is outside [0, 1]"),
            ("loss=abc", "parameter loss: \"abc\" is not a number"),
            ("loss=NaN", "parameter loss: NaN is outside [0, 1]"),
            (
                "nat=full",
                "parameter nat: \"full\" is not one of cone, symmetric",
            ),
            (
                "rate=5",
                "parameter rate: unknown; this scenario takes loss, nat",
            ),
            ("loss", "parameter loss: expected key=value"),
        ];
        for (input, message) in cases {
            let err = Params::parse(SPECS, &[input.to_owned()]).unwrap_err();
            assert_eq!(err.to_string(), message, "{input}");
        }
    }
}
