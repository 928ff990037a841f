//! [`RequestOptions`]: what one request may choose, read from the query string and from
//! SageMaker's `X-Amzn-SageMaker-Custom-Attributes` header (`tasks=asr,diarize;format=vtt`),
//! and applied to the shared analyzer as a view (no model is loaded per request).

use std::str::FromStr;

use mica::{Analyzer, Task};
use mica_core::writers::Format;

use crate::error::ApiError;

/// The longest custom-attributes header SageMaker passes on (its documented limit).
pub const MAX_CUSTOM_ATTRIBUTES: usize = 1024;

/// The options a request can set; every one is optional (the analyzer's own apply).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestOptions {
    /// A subset of the loaded tasks.
    pub tasks: Option<Vec<Task>>,
    /// The document format (beats the `Accept` header).
    pub format: Option<Format>,
    /// The Whisper model: must name the one this server loaded.
    pub model: Option<String>,
    /// The spoken language (`en`, `fr`, ...; `auto` detects it).
    pub language: Option<String>,
    /// Beams at temperature 0.
    pub beam_size: Option<usize>,
    /// The exact number of speakers.
    pub num_speakers: Option<usize>,
    /// At least this many speakers.
    pub min_speakers: Option<usize>,
    /// At most this many speakers.
    pub max_speakers: Option<usize>,
}

/// The option names, as the error for an unknown one lists them.
const KEYS: [&str; 8] = [
    "tasks",
    "format",
    "model",
    "language",
    "beam_size",
    "num_speakers",
    "min_speakers",
    "max_speakers",
];

impl RequestOptions {
    /// Reads the query string's pairs, then the custom-attributes header's (which win
    /// where both set one option).
    pub fn parse(
        query: Option<&str>,
        attributes: Option<&str>,
    ) -> Result<RequestOptions, ApiError> {
        let mut options = RequestOptions::default();
        if let Some(query) = query {
            let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
                .map_err(|e| ApiError::options(format!("the query string: {e}")))?;
            for (key, value) in &pairs {
                options.set(key, value)?;
            }
        }
        if let Some(attributes) = attributes {
            if attributes.len() > MAX_CUSTOM_ATTRIBUTES {
                return Err(ApiError::options(format!(
                    "X-Amzn-SageMaker-Custom-Attributes holds {} characters; at most {MAX_CUSTOM_ATTRIBUTES}",
                    attributes.len()
                )));
            }
            for item in attributes
                .split(';')
                .map(str::trim)
                .filter(|i| !i.is_empty())
            {
                let (key, value) = item.split_once('=').ok_or_else(|| {
                    ApiError::options(format!(
                        "custom attribute {item:?} is not key=value (e.g. tasks=asr,diarize;format=vtt)"
                    ))
                })?;
                options.set(key.trim(), value.trim())?;
            }
        }
        Ok(options)
    }

    fn set(&mut self, key: &str, value: &str) -> Result<(), ApiError> {
        let count = |v: &str| {
            usize::from_str(v)
                .map_err(|_| ApiError::options(format!("{key}={v:?} is not a whole number")))
        };
        match key {
            "tasks" => {
                let tasks = value
                    .split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(Task::from_str)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| ApiError::options(e.to_string()))?;
                if tasks.is_empty() {
                    return Err(ApiError::options("tasks= names no task"));
                }
                self.tasks = Some(tasks);
            }
            "format" => {
                self.format =
                    Some(Format::from_str(value).map_err(|e| ApiError::options(e.to_string()))?)
            }
            "model" => self.model = Some(value.to_string()),
            "language" => self.language = Some(value.to_string()),
            "beam_size" => self.beam_size = Some(count(value)?),
            "num_speakers" => self.num_speakers = Some(count(value)?),
            "min_speakers" => self.min_speakers = Some(count(value)?),
            "max_speakers" => self.max_speakers = Some(count(value)?),
            _ => {
                return Err(ApiError::options(format!(
                    "unknown option {key:?}; the options are {}",
                    KEYS.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// The analyzer this request runs: `analyzer` (which serves `model`) narrowed to
    /// the request's tasks and given its options. Shares every weight.
    pub fn apply(&self, analyzer: &Analyzer, model: &str) -> Result<Analyzer, ApiError> {
        if let Some(asked) = &self.model
            && asked != model
        {
            return Err(ApiError::new(
                axum::http::StatusCode::BAD_REQUEST,
                "unknown_model",
                format!("model {asked:?} is not served here; this endpoint serves {model:?}"),
            ));
        }
        let mut view = match &self.tasks {
            Some(tasks) => analyzer.with_tasks(tasks.iter().copied())?,
            None => analyzer.clone(),
        };
        let wants = |t: Task| view.tasks().contains(&t);
        if self.language.is_some() || self.beam_size.is_some() {
            if !wants(Task::Asr) {
                return Err(ApiError::options(
                    "language and beam_size need the asr task",
                ));
            }
            let mut transcribe = view.transcribe_options().clone();
            if let Some(language) = &self.language {
                transcribe.language = (language != "auto").then(|| language.clone());
            }
            if let Some(beams) = self.beam_size {
                transcribe.decode.beam_size = beams;
            }
            view = view.with_transcribe_options(transcribe)?;
        }
        let speakers = [self.num_speakers, self.min_speakers, self.max_speakers];
        if speakers.iter().any(Option::is_some) {
            let Some(diarize) = view.diarize_options() else {
                return Err(ApiError::options(
                    "num_speakers, min_speakers and max_speakers need the diarize task",
                ));
            };
            let mut diarize = diarize.clone();
            diarize.num_speakers = self.num_speakers.or(diarize.num_speakers);
            diarize.min_speakers = self.min_speakers.or(diarize.min_speakers);
            diarize.max_speakers = self.max_speakers.or(diarize.max_speakers);
            view = view.with_diarize_options(diarize)?;
        }
        Ok(view)
    }

    /// Whether `format` can be written from `tasks`' results.
    pub fn check_format(format: Format, tasks: &[Task]) -> Result<(), ApiError> {
        let needs = format.needs();
        if needs.is_empty()
            || needs
                .iter()
                .any(|p| tasks.iter().any(|t| t.name() == p.task()))
        {
            return Ok(());
        }
        let names: Vec<&str> = needs.iter().map(|p| p.task()).collect();
        Err(ApiError::options(format!(
            "format {} needs the {} task; add it to tasks",
            format.name(),
            names.join(" or ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_and_attributes_are_read_and_the_header_wins() {
        let o = RequestOptions::parse(
            Some("tasks=asr&format=srt&num_speakers=2"),
            Some("tasks=asr,diarize; format=vtt;model=tiny.en;"),
        )
        .unwrap();
        assert_eq!(o.tasks, Some(vec![Task::Asr, Task::Diarize]));
        assert_eq!(o.format, Some(Format::Vtt));
        assert_eq!(o.model.as_deref(), Some("tiny.en"));
        assert_eq!(o.num_speakers, Some(2));
    }

    #[test]
    fn bad_options_are_client_errors_that_say_what() {
        for (query, header, says) in [
            (Some("tasks=ocr"), None, "ocr"),
            (Some("format=docx"), None, "docx"),
            (Some("num_speakers=two"), None, "whole number"),
            (Some("speed=fast"), None, "unknown option"),
            (None, Some("tasks"), "key=value"),
            (Some("tasks="), None, "no task"),
        ] {
            let e = RequestOptions::parse(query, header).unwrap_err();
            assert_eq!(e.status, 400, "{query:?} {header:?}");
            assert!(e.message.contains(says), "{}", e.message);
        }
        let long = format!("tasks=asr;{}", "x".repeat(MAX_CUSTOM_ATTRIBUTES));
        let e = RequestOptions::parse(None, Some(&long)).unwrap_err();
        assert!(e.message.contains("at most 1024"), "{}", e.message);
    }

    #[test]
    fn formats_need_their_tasks() {
        assert!(RequestOptions::check_format(Format::Srt, &[Task::Asr]).is_ok());
        assert!(RequestOptions::check_format(Format::Json, &[Task::Vad]).is_ok());
        assert!(RequestOptions::check_format(Format::Rttm, &[Task::Vad]).is_ok());
        let e = RequestOptions::check_format(Format::Edl, &[Task::Asr]).unwrap_err();
        assert!(e.message.contains("shots"), "{}", e.message);
    }
}
