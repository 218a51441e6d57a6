//! Assembling a streamed chat completion: server-sent events whose `data:` lines carry chunks with
//! `choices[0].delta.content`, ended by `data: [DONE]`.
//!
//! Network chunks split the stream anywhere, also inside a multi-byte UTF-8 character, so bytes are buffered and
//! only complete lines are decoded (a `\n` byte never occurs inside a multi-byte character).

use serde_json::Value;

/// Text and usage gathered from the chunks so far.
#[derive(Debug, Default)]
pub struct Assembler {
    /// Bytes of a line not complete yet.
    buffer: Vec<u8>,
    pub text: String,
    pub model: Option<String>,
    pub usage: Option<Value>,
    pub done: bool,
}

impl Assembler {
    /// Feeds bytes as they arrive; complete lines are processed, a partial line waits for the rest.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.buffer.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(end) = self.buffer[start..].iter().position(|b| *b == b'\n').map(|at| start + at) {
            let line = std::str::from_utf8(&self.buffer[start..end])
                .map_err(|_| "the stream is not valid UTF-8".to_string())?
                .trim_end_matches('\r')
                .to_string();
            start = end + 1;
            self.line(&line)?;
        }
        self.buffer.drain(..start);
        Ok(())
    }

    fn line(&mut self, line: &str) -> Result<(), String> {
        let Some(data) = line.strip_prefix("data:") else { return Ok(()) };
        let data = data.trim();
        if data == "[DONE]" {
            self.done = true;
            return Ok(());
        }
        if data.is_empty() {
            return Ok(());
        }
        let chunk: Value = serde_json::from_str(data).map_err(|e| format!("a stream chunk is not JSON: {e}"))?;
        if let Some(error) = chunk.get("error") {
            return Err(format!("the provider sent an error in the stream: {error}"));
        }
        if let Some(piece) = chunk["choices"][0]["delta"]["content"].as_str() {
            self.text.push_str(piece);
        }
        if let Some(model) = chunk["model"].as_str() {
            self.model = Some(model.to_string());
        }
        if chunk.get("usage").is_some_and(|u| !u.is_null()) {
            self.usage = chunk.get("usage").cloned();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_split_anywhere_assemble_into_the_answer() {
        let stream = "data: {\"model\":\"m\",\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\n\
                      data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n\
                      : keep-alive comment\n\
                      data: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}],\"usage\":null}\n\n\
                      data: {\"choices\":[],\"usage\":{\"total_tokens\":7}}\n\n\
                      data: [DONE]\n\n";
        for split in [1, 7, 50, stream.len()] {
            let mut assembler = Assembler::default();
            for piece in stream.as_bytes().chunks(split) {
                assembler.feed(piece).unwrap();
            }
            assert_eq!(assembler.text, "Hello");
            assert!(assembler.done);
            assert_eq!(assembler.usage, Some(serde_json::json!({"total_tokens": 7})));
            assert_eq!(assembler.model.as_deref(), Some("m"));
        }
        assert!(Assembler::default().feed(b"data: {\"error\":{\"message\":\"overloaded\"}}\n").is_err());
    }

    #[test]
    fn multi_byte_characters_split_between_chunks_arrive_whole() {
        let text = "héllo 世界 🎉";
        let stream = format!(
            "data: {}\n\ndata: {}\r\n\r\ndata: [DONE]\n\n",
            serde_json::json!({"choices": [{"delta": {"content": &text[..7]}}]}),
            serde_json::json!({"choices": [{"delta": {"content": &text[7..]}}]}),
        );
        let bytes = stream.as_bytes();
        // Every split point, so each character is cut at each of its bytes once.
        for cut in 0..=bytes.len() {
            let mut assembler = Assembler::default();
            assembler.feed(&bytes[..cut]).unwrap();
            assembler.feed(&bytes[cut..]).unwrap();
            assert_eq!(assembler.text, text, "split at byte {cut}");
            assert!(assembler.done);
        }
        // And byte by byte.
        let mut assembler = Assembler::default();
        for byte in bytes {
            assembler.feed(std::slice::from_ref(byte)).unwrap();
        }
        assert_eq!(assembler.text, text);
        assert!(Assembler::default().feed(b"data: \xff\xfe\n").is_err(), "a line that is not UTF-8 is refused");
    }
}
