//! The built-in model catalog: what well-known models can do (context window, output limit,
//! modalities, tools, structured output, reasoning). Prices live in `policy::prices` (the same
//! catalog for budgets and routing); config overrides both per model and per deployment.

use crate::config::CapabilityOverride;

/// What one deployment can do. `context_window: None` means unknown (not checked).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities {
    pub context_window: Option<u64>,
    pub max_output: Option<u64>,
    pub vision: bool,
    pub tools: bool,
    pub json_schema: bool,
    pub reasoning: bool,
}

impl Capabilities {
    const fn new(
        context: u64,
        max_output: u64,
        vision: bool,
        tools: bool,
        json: bool,
        reasoning: bool,
    ) -> Self {
        Self {
            context_window: Some(context),
            max_output: Some(max_output),
            vision,
            tools,
            json_schema: json,
            reasoning,
        }
    }

    /// `o` on top of `self`.
    #[must_use]
    pub fn with(self, o: &CapabilityOverride) -> Self {
        Self {
            context_window: o.context_window.or(self.context_window),
            max_output: o.max_output.or(self.max_output),
            vision: o.vision.unwrap_or(self.vision),
            tools: o.tools.unwrap_or(self.tools),
            json_schema: o.json_schema.unwrap_or(self.json_schema),
            reasoning: o.reasoning.unwrap_or(self.reasoning),
        }
    }

    /// The first requirement of `needs` this deployment does not meet, by name.
    pub fn missing(&self, needs: &Needs) -> Option<Missing> {
        if needs.vision && !self.vision {
            return Some(Missing::Vision);
        }
        if needs.tools && !self.tools {
            return Some(Missing::Tools);
        }
        if needs.json_schema && !self.json_schema {
            return Some(Missing::JsonSchema);
        }
        if let (Some(out), Some(max)) = (needs.max_tokens, self.max_output) {
            if out > max {
                return Some(Missing::MaxOutput);
            }
        }
        if let Some(ctx) = self.context_window {
            if needs.prompt_tokens + needs.max_tokens.unwrap_or(0) > ctx {
                return Some(Missing::ContextWindow);
            }
        }
        None
    }
}

/// A capability a request needs that a deployment lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    Vision,
    Tools,
    JsonSchema,
    MaxOutput,
    ContextWindow,
}

impl Missing {
    pub fn as_str(self) -> &'static str {
        match self {
            Missing::Vision => "vision (image input)",
            Missing::Tools => "tool calling",
            Missing::JsonSchema => "structured output (response_format json_schema)",
            Missing::MaxOutput => "max output tokens",
            Missing::ContextWindow => "context window",
        }
    }

    /// The request field the requirement comes from.
    pub fn param(self) -> &'static str {
        match self {
            Missing::Vision | Missing::ContextWindow => "messages",
            Missing::Tools => "tools",
            Missing::JsonSchema => "response_format",
            Missing::MaxOutput => "max_tokens",
        }
    }
}

/// What a request needs, derived from its body (only for routes that route by capability).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    pub vision: bool,
    pub tools: bool,
    pub json_schema: bool,
    /// Estimated prompt tokens (bytes / 4).
    pub prompt_tokens: u64,
    pub max_tokens: Option<u64>,
}

const K: u64 = 1024;

/// Built-in capabilities by provider model name (then by public model name).
pub fn builtin(model: &str) -> Option<Capabilities> {
    let c = Capabilities::new;
    Some(match model {
        // The mock models: a small context window so tests can overflow it.
        "mock-1" => c(16 * K, 4 * K, true, true, true, false),
        "mock-2" => c(8 * K, 2 * K, false, false, false, false),
        "gpt-4o" | "gpt-4o-mini" => c(128_000, 16_384, true, true, true, false),
        "gpt-4.1" | "gpt-4.1-mini" | "gpt-4.1-nano" => {
            c(1_047_576, 32_768, true, true, true, false)
        }
        "gpt-5" | "gpt-5-mini" | "gpt-5-nano" => c(400_000, 128_000, true, true, true, true),
        "o3" | "o4-mini" => c(200_000, 100_000, true, true, true, true),
        "o3-mini" => c(200_000, 100_000, false, true, true, true),
        "claude-opus-4-1" | "claude-opus-4-5" => c(200_000, 32_000, true, true, false, true),
        "claude-sonnet-4-5" | "claude-sonnet-4" => c(200_000, 64_000, true, true, false, true),
        "claude-haiku-4-5" => c(200_000, 64_000, true, true, false, true),
        "gemini-2.5-pro" => c(1_048_576, 65_536, true, true, true, true),
        "gemini-2.5-flash" | "gemini-2.5-flash-lite" => {
            c(1_048_576, 65_536, true, true, true, true)
        }
        "gemini-2.0-flash" => c(1_048_576, 8_192, true, true, true, false),
        "llama-3.3-70b" | "llama-3.1-8b" => c(128_000, 8 * K, false, true, false, false),
        _ => return None,
    })
}
