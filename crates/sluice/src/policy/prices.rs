//! Model prices and the cost of a request, in integer micro-USD.
//!
//! Prices are micro-USD per one million tokens (so `$2.50 / 1M` is `2_500_000`); a cost is
//! `tokens * price / 1_000_000`, rounded up, per token kind. Cached input tokens (a subset of
//! input) and reasoning tokens (a subset of output) are charged at their own price when one is
//! set and at the plain input/output price otherwise.

use crate::canonical::Usage;

/// The built-in catalog's version; a config with price overrides stamps its own suffix.
pub const BUILTIN_CATALOG: &str = "builtin-2026.12";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Price {
    pub input: u64,
    pub output: u64,
    pub cached_input: Option<u64>,
    pub reasoning: Option<u64>,
    /// Prompt-cache writes (a subset of input, disjoint from cached reads).
    pub cache_write: Option<u64>,
}

impl Price {
    const fn new(input: u64, output: u64, cached_input: Option<u64>) -> Self {
        Self {
            input,
            output,
            cached_input,
            reasoning: None,
            cache_write: None,
        }
    }

    /// Anthropic's scheme: cache reads at a tenth of input, 5-minute cache writes at 1.25×.
    const fn anthropic(input: u64, output: u64) -> Self {
        Self {
            input,
            output,
            cached_input: Some(input / 10),
            reasoning: None,
            cache_write: Some(input / 4 * 5),
        }
    }

    /// The cost of `usage`, rounded up to the micro-USD.
    pub fn cost(&self, u: &Usage) -> i64 {
        let cached = u.cached_input_tokens.min(u.input_tokens);
        let written = u.cache_write_tokens.min(u.input_tokens - cached);
        let reasoning = u.reasoning_tokens.min(u.output_tokens);
        let numerator = u128::from(u.input_tokens - cached - written) * u128::from(self.input)
            + u128::from(cached) * u128::from(self.cached_input.unwrap_or(self.input))
            + u128::from(written) * u128::from(self.cache_write.unwrap_or(self.input))
            + u128::from(u.output_tokens - reasoning) * u128::from(self.output)
            + u128::from(reasoning) * u128::from(self.reasoning.unwrap_or(self.output));
        i64::try_from(numerator.div_ceil(1_000_000)).unwrap_or(i64::MAX)
    }

    /// The most `input` prompt tokens plus `output` completion tokens can cost.
    pub fn worst_case(&self, input: u64, output: u64) -> i64 {
        let out_price = self.output.max(self.reasoning.unwrap_or(0));
        let in_price = self.input.max(self.cache_write.unwrap_or(0));
        let n =
            u128::from(input) * u128::from(in_price) + u128::from(output) * u128::from(out_price);
        i64::try_from(n.div_ceil(1_000_000)).unwrap_or(i64::MAX)
    }

    /// The most output tokens `left` micro-USD can pay beside `input` prompt tokens at
    /// their worst-case price; `None` when nothing is left for output (or output is free).
    pub fn affordable_output(&self, left: i64, input: u64) -> Option<u64> {
        let out_price = self.output.max(self.reasoning.unwrap_or(0));
        let in_price = self.input.max(self.cache_write.unwrap_or(0));
        let budget = u128::try_from(left).ok()?.checked_mul(1_000_000)?;
        let for_output = budget.checked_sub(u128::from(input) * u128::from(in_price))?;
        if out_price == 0 {
            return None;
        }
        u64::try_from(for_output / u128::from(out_price)).ok()
    }

    /// The dearer of two prices, field by field (for reserving before a deployment is chosen).
    pub fn max(self, other: Price) -> Price {
        Price {
            input: self.input.max(other.input),
            output: self.output.max(other.output),
            cached_input: self.cached_input.max(other.cached_input),
            reasoning: self.reasoning.max(other.reasoning),
            cache_write: self.cache_write.max(other.cache_write),
        }
    }
}

const M: u64 = 1_000_000;

/// Built-in prices by provider model name. The mock models are priced so that tests can
/// compute costs by hand: one micro-USD per input token, two per output token.
pub fn builtin(model: &str) -> Option<Price> {
    Some(match model {
        "mock-1" => Price::new(M, 2 * M, Some(M / 2)),
        "mock-2" => Price::new(3 * M, 6 * M, None),
        "mock-embed" => Price::new(M / 10, 0, None),
        "gpt-4o" => Price::new(2_500_000, 10_000_000, Some(1_250_000)),
        "gpt-4o-mini" => Price::new(150_000, 600_000, Some(75_000)),
        "gpt-4.1" => Price::new(2_000_000, 8_000_000, Some(500_000)),
        "gpt-4.1-mini" => Price::new(400_000, 1_600_000, Some(100_000)),
        "gpt-4.1-nano" => Price::new(100_000, 400_000, Some(25_000)),
        "gpt-5" => Price::new(1_250_000, 10_000_000, Some(125_000)),
        "gpt-5-mini" => Price::new(250_000, 2_000_000, Some(25_000)),
        "gpt-5-nano" => Price::new(50_000, 400_000, Some(5_000)),
        "o3" => Price::new(2_000_000, 8_000_000, Some(500_000)),
        "o3-mini" | "o4-mini" => Price::new(1_100_000, 4_400_000, Some(275_000)),
        "text-embedding-3-small" => Price::new(20_000, 0, None),
        "text-embedding-3-large" => Price::new(130_000, 0, None),
        "claude-opus-4-1" | "claude-opus-4-0" => Price::anthropic(15 * M, 75 * M),
        "claude-sonnet-4-5" | "claude-sonnet-4-0" | "claude-3-7-sonnet-latest" => {
            Price::anthropic(3 * M, 15 * M)
        }
        "claude-haiku-4-5" => Price::anthropic(M, 5 * M),
        "claude-3-5-haiku-latest" => Price::anthropic(800_000, 4 * M),
        "gemini-2.5-pro" => Price::new(1_250_000, 10 * M, Some(125_000)),
        "gemini-2.5-flash" => Price::new(300_000, 2_500_000, Some(30_000)),
        "gemini-2.5-flash-lite" => Price::new(100_000, 400_000, Some(10_000)),
        "gemini-2.0-flash" => Price::new(100_000, 400_000, Some(25_000)),
        "gemini-embedding-001" => Price::new(150_000, 0, None),
        _ => return None,
    })
}

/// Parses a decimal USD amount (`"2.5"`, `100`, `0.000001`) into micro-USD, exactly.
pub fn parse_usd(text: &str) -> Result<i64, String> {
    let t = text.trim().trim_start_matches('$');
    if t.starts_with('-') {
        return Err(format!("{text:?} is negative; amounts must be 0 or more"));
    }
    let (whole, frac) = t.split_once('.').unwrap_or((t, ""));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || (!frac.is_empty() && !digits(frac)) {
        return Err(format!(
            "{text:?} is not an amount in USD such as 100 or 2.50"
        ));
    }
    if frac.len() > 6 {
        return Err(format!(
            "{text:?} has more than 6 decimals (micro-USD is the unit)"
        ));
    }
    let whole: i64 = whole
        .parse()
        .map_err(|_| format!("{text:?} is too large"))?;
    let frac_micro: i64 = format!("{frac:0<6}").parse().unwrap_or(0);
    whole
        .checked_mul(1_000_000)
        .and_then(|w| w.checked_add(frac_micro))
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// Formats micro-USD as a decimal USD string (`1500000` -> `"1.5"`).
pub fn format_usd(micro: i64) -> String {
    let sign = if micro < 0 { "-" } else { "" };
    let m = micro.unsigned_abs();
    let frac = format!("{:06}", m % 1_000_000);
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() {
        format!("{sign}{}", m / 1_000_000)
    } else {
        format!("{sign}{}.{frac}", m / 1_000_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_rounds_up_and_prices_cached_and_reasoning_tokens() {
        let p = Price {
            input: 2_500_000,
            output: 10_000_000,
            cached_input: Some(1_250_000),
            reasoning: None,
            cache_write: None,
        };
        let u = Usage {
            input_tokens: 1000,
            output_tokens: 100,
            cached_input_tokens: 400,
            reasoning_tokens: 50,
            cache_write_tokens: 0,
        };
        // 600 * 2.5 + 400 * 1.25 + 100 * 10 = 1500 + 500 + 1000 micro-USD.
        assert_eq!(p.cost(&u), 3000);
        let one = Usage {
            input_tokens: 1,
            ..Usage::default()
        };
        assert_eq!(Price::new(1, 1, None).cost(&one), 1, "rounds up");
        assert_eq!(p.worst_case(10, 10), 125);
        // Anthropic: 1000 input of which 300 read from cache and 200 written to it.
        let claude = builtin("claude-sonnet-4-5").unwrap();
        let u = Usage {
            input_tokens: 1000,
            output_tokens: 10,
            cached_input_tokens: 300,
            cache_write_tokens: 200,
            ..Usage::default()
        };
        // 500 * 3 + 300 * 0.3 + 200 * 3.75 + 10 * 15 = 1500 + 90 + 750 + 150.
        assert_eq!(claude.cost(&u), 2490);
    }

    #[test]
    fn every_zero_config_model_is_priced() {
        use crate::config::defaults as d;
        for m in d::MOCK_MODELS
            .iter()
            .chain(d::OPENAI_MODELS)
            .chain(d::ANTHROPIC_MODELS)
            .chain(d::GEMINI_MODELS)
        {
            assert!(builtin(m).is_some(), "{m} has no built-in price");
        }
    }

    #[test]
    fn usd_amounts_parse_exactly() {
        assert_eq!(parse_usd("100"), Ok(100_000_000));
        assert_eq!(parse_usd("2.5"), Ok(2_500_000));
        assert_eq!(parse_usd("0.000001"), Ok(1));
        assert!(parse_usd("-1").is_err());
        assert!(parse_usd("1.0000001").is_err());
        assert!(parse_usd("abc").is_err());
        assert_eq!(format_usd(1_500_000), "1.5");
        assert_eq!(format_usd(100_000_000), "100");
    }
}
