//! The OpenAI chat completions wire format: requests, streamed chunks, and tool-call assembly.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The body of `POST /chat/completions`.
#[derive(Debug, Serialize)]
pub struct ChatRequest<'a> {
    pub model: &'a str,
    pub messages: &'a [ChatMessage],
    pub stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "<[Value]>::is_empty")]
    pub tools: &'a [Value],
    /// `"none"` on the last allowed round, so the model answers instead of calling tools again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<&'static str>,
}

/// One message of the conversation sent to the model.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChatMessage {
    pub role: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

/// A complete tool call the model asked for.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ToolCall {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: FunctionCall,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FunctionCall {
    pub name: String,
    pub arguments: String,
}

/// One `data:` line of the streamed response.
#[derive(Debug, Deserialize)]
pub struct Chunk {
    #[serde(default)]
    pub choices: Vec<Choice>,
    /// Some servers report failures inside the stream.
    pub error: Option<Value>,
}

#[derive(Debug, Deserialize)]
pub struct Choice {
    #[serde(default)]
    pub delta: Delta,
}

#[derive(Debug, Default, Deserialize)]
pub struct Delta {
    pub content: Option<String>,
    #[serde(default)]
    pub tool_calls: Vec<ToolCallDelta>,
}

/// A fragment of a tool call; fragments with the same `index` make one call.
#[derive(Debug, Deserialize)]
pub struct ToolCallDelta {
    #[serde(default)]
    pub index: usize,
    pub id: Option<String>,
    pub function: Option<FunctionDelta>,
}

#[derive(Debug, Deserialize)]
pub struct FunctionDelta {
    pub name: Option<String>,
    pub arguments: Option<String>,
}

/// Tool calls assembled from their streamed fragments, by index.
#[derive(Debug, Default)]
pub struct ToolCalls(BTreeMap<usize, (String, String, String)>);

// === impl ChatMessage ===

impl ChatMessage {
    pub fn text(role: &'static str, content: impl Into<String>) -> Self {
        Self {
            role,
            content: Some(content.into()),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }

    /// The assistant's turn that asked for `calls`, with any text it said first.
    pub fn tool_request(text: String, calls: Vec<ToolCall>) -> Self {
        Self {
            role: "assistant",
            content: (!text.is_empty()).then_some(text),
            tool_calls: calls,
            tool_call_id: None,
        }
    }

    /// The result of the call `call_id`.
    pub fn tool_result(call_id: String, content: String) -> Self {
        Self {
            role: "tool",
            content: Some(content),
            tool_calls: Vec::new(),
            tool_call_id: Some(call_id),
        }
    }
}

// === impl ToolCalls ===

impl ToolCalls {
    /// Adds fragments: the id and name arrive once, the arguments in pieces.
    pub fn add(&mut self, deltas: Vec<ToolCallDelta>) {
        for delta in deltas {
            let (id, name, arguments) = self.0.entry(delta.index).or_default();
            // Some servers repeat the id and name in every fragment: keep the first.
            if let Some(part) = delta.id.filter(|_| id.is_empty()) {
                *id = part;
            }
            if let Some(function) = delta.function {
                if let Some(part) = function.name.filter(|_| name.is_empty()) {
                    *name = part;
                }
                arguments.push_str(function.arguments.as_deref().unwrap_or_default());
            }
        }
    }

    /// The complete calls in index order, or the index of one that never got a name.
    pub fn finish(self) -> Result<Vec<ToolCall>, usize> {
        self.0
            .into_iter()
            .map(|(index, (id, name, arguments))| {
                if name.is_empty() {
                    return Err(index);
                }
                Ok(ToolCall {
                    id: if id.is_empty() {
                        format!("call_{index}")
                    } else {
                        id
                    },
                    kind: "function",
                    function: FunctionCall { name, arguments },
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(json: &str) -> Chunk {
        serde_json::from_str(json).expect("valid chunk")
    }

    #[test]
    fn tool_call_fragments_assemble_by_index() {
        let mut calls = ToolCalls::default();
        for line in [
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"calculator","arguments":""}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_b","function":{"name":"current_time","arguments":"{}"}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"expre"}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"ssion\":\"1+1\"}"}}]},"finish_reason":"tool_calls"}]}"#,
        ] {
            for choice in chunk(line).choices {
                calls.add(choice.delta.tool_calls);
            }
        }

        let calls = calls.finish().expect("complete calls");
        assert_eq!(calls.len(), 2);
        assert_eq!(
            (calls[0].id.as_str(), calls[0].function.name.as_str()),
            ("call_a", "calculator")
        );
        assert_eq!(calls[0].function.arguments, r#"{"expression":"1+1"}"#);
        assert_eq!(calls[1].function.name, "current_time");
    }

    #[test]
    fn a_call_without_a_name_is_refused() {
        let mut calls = ToolCalls::default();
        calls.add(
            chunk(r#"{"choices":[{"delta":{"tool_calls":[{"index":3,"function":{"arguments":"{}"}}]}}]}"#)
                .choices
                .remove(0)
                .delta
                .tool_calls,
        );
        assert_eq!(calls.finish(), Err(3));
    }

    #[test]
    fn assistant_tool_request_serializes_without_empty_content() {
        let message = ChatMessage::tool_request(
            String::new(),
            vec![ToolCall {
                id: "call_1".into(),
                kind: "function",
                function: FunctionCall {
                    name: "calculator".into(),
                    arguments: "{}".into(),
                },
            }],
        );
        let json = serde_json::to_value(&message).expect("serializes");
        assert_eq!(
            json,
            serde_json::json!({
                "role": "assistant",
                "tool_calls": [{ "id": "call_1", "type": "function", "function": { "name": "calculator", "arguments": "{}" } }]
            })
        );
    }
}
