//! Content negotiation: the `Accept` header to an output [`Format`].

use mica_core::writers::Format;

use crate::error::ApiError;

/// The media types each format answers to (the first is what it is sent as).
fn types(format: Format) -> &'static [&'static str] {
    match format {
        Format::Json => &["application/json"],
        Format::Srt => &["application/x-subrip", "text/srt", "application/srt"],
        Format::Vtt => &["text/vtt"],
        Format::Rttm => &["text/x-rttm", "text/rttm"],
        Format::Txt => &["text/plain"],
        Format::Csv => &["text/csv"],
        Format::Edl => &["text/x-edl", "application/x-edl"],
    }
}

/// The format an `Accept` header asks for: the highest-quality media type mica writes
/// (`*/*` and `application/*` give JSON, `text/*` plain text). None or an empty header
/// gives JSON; a header that accepts nothing mica writes is a 406.
pub fn negotiate(accept: Option<&str>) -> Result<Format, ApiError> {
    let Some(accept) = accept.map(str::trim).filter(|a| !a.is_empty()) else {
        return Ok(Format::Json);
    };
    let mut best: Option<(f32, Format)> = None;
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default().to_ascii_lowercase();
        let quality = parts
            .filter_map(|p| p.strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        if quality <= 0.0 {
            continue;
        }
        let format = match media.as_str() {
            "*/*" | "application/*" => Some(Format::Json),
            "text/*" => Some(Format::Txt),
            m => Format::ALL.into_iter().find(|f| types(*f).contains(&m)),
        };
        if let Some(format) = format
            && best.is_none_or(|(q, _)| quality > q)
        {
            best = Some((quality, format));
        }
    }
    best.map(|(_, f)| f).ok_or_else(|| {
        let all: Vec<&str> = Format::ALL.iter().map(|f| types(*f)[0]).collect();
        ApiError::new(
            axum::http::StatusCode::NOT_ACCEPTABLE,
            "not_acceptable",
            format!(
                "Accept: {accept} names nothing mica writes; it writes {}",
                all.join(", ")
            ),
        )
    })
}

/// The `Content-Type` a document in `format` is sent with.
pub fn content_type(format: Format) -> &'static str {
    match format {
        Format::Json => "application/json",
        other => match types(other)[0] {
            "application/x-subrip" => "application/x-subrip; charset=utf-8",
            "text/vtt" => "text/vtt; charset=utf-8",
            "text/x-rttm" => "text/x-rttm; charset=utf-8",
            "text/plain" => "text/plain; charset=utf-8",
            "text/csv" => "text/csv; charset=utf-8",
            _ => "text/x-edl; charset=utf-8",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_picks_the_best_format_mica_writes() {
        assert_eq!(negotiate(None).unwrap(), Format::Json);
        assert_eq!(negotiate(Some("*/*")).unwrap(), Format::Json);
        assert_eq!(negotiate(Some("text/vtt")).unwrap(), Format::Vtt);
        assert_eq!(
            negotiate(Some("text/html;q=0.9, text/x-rttm, */*;q=0.1")).unwrap(),
            Format::Rttm
        );
        assert_eq!(
            negotiate(Some("text/csv;q=0.2, text/vtt;q=0.8")).unwrap(),
            Format::Vtt
        );
        assert_eq!(negotiate(Some("TEXT/PLAIN")).unwrap(), Format::Txt);
        let e = negotiate(Some("image/png, text/vtt;q=0")).unwrap_err();
        assert_eq!(e.status, 406);
    }

    #[test]
    fn every_format_has_a_content_type_that_negotiates_back() {
        for f in Format::ALL {
            let ct = content_type(f);
            let media = ct.split(';').next().unwrap();
            assert_eq!(negotiate(Some(media)).unwrap(), f, "{ct}");
        }
    }
}
