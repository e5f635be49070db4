//! Rows of one data file: `.tsv` (header row, no quoting, as GLUE), `.csv` (header row,
//! RFC 4180 quoting) or `.jsonl`/`.json` (one JSON object per line).

use std::io::BufRead;
use std::path::Path;

use super::DataError;

/// One example as written in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRow {
    /// 1-based line number where the row starts.
    pub line: u64,
    /// The text column.
    pub text: String,
    /// The second text of a sentence pair (the `text_pair` column), when one is configured.
    pub text_pair: Option<String>,
    /// The label column, as text (integers are written in decimal).
    pub label: String,
}

/// The columns one example is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Columns<'a> {
    /// The text (the first text of a pair).
    pub text: &'a str,
    /// The second text of a sentence pair; `None` for single sentences.
    pub text_pair: Option<&'a str>,
    /// The label.
    pub label: &'a str,
}

impl<'a> Columns<'a> {
    /// Single sentences: `text` and `label`.
    pub fn single(text: &'a str, label: &'a str) -> Self {
        Columns { text, text_pair: None, label }
    }
}

/// Reads at most `max_rows` rows (all if `None`) of `path`.
pub fn read_rows(path: &Path, columns: Columns<'_>, max_rows: Option<usize>) -> Result<Vec<RawRow>, DataError> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or_default().to_ascii_lowercase();
    let limit = max_rows.unwrap_or(usize::MAX);
    let rows = match ext.as_str() {
        "tsv" => read_delimited(path, b'\t', false, columns, limit)?,
        "csv" => read_delimited(path, b',', true, columns, limit)?,
        "jsonl" | "json" => read_jsonl(path, columns, limit)?,
        _ => return Err(DataError::UnknownFormat { path: path.to_owned() }),
    };
    if rows.is_empty() {
        return Err(DataError::Empty { path: path.to_owned() });
    }
    Ok(rows)
}

fn open(path: &Path) -> Result<std::fs::File, DataError> {
    std::fs::File::open(path).map_err(|source| DataError::Io { path: path.to_owned(), source })
}

fn bad_row(path: &Path, line: u64, reason: impl Into<String>) -> DataError {
    DataError::BadRow { path: path.to_owned(), line, reason: reason.into() }
}

fn read_delimited(
    path: &Path,
    delimiter: u8,
    quoting: bool,
    columns: Columns<'_>,
    limit: usize,
) -> Result<Vec<RawRow>, DataError> {
    let bytes = std::fs::read(path).map_err(|source| DataError::Io { path: path.to_owned(), source })?;
    // The csv crate's own line count skips blank lines; count newlines before the record.
    let newlines: Vec<usize> = bytes.iter().enumerate().filter(|(_, &b)| b == b'\n').map(|(i, _)| i).collect();
    // A record's position may point at blank lines before it: skip them.
    let line_of = |byte: u64| {
        let start = bytes[(byte as usize).min(bytes.len())..]
            .iter()
            .position(|b| !matches!(b, b'\n' | b'\r'))
            .map_or(bytes.len(), |skip| byte as usize + skip);
        newlines.partition_point(|&nl| nl < start) as u64 + 1
    };
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .quoting(quoting)
        .flexible(true)
        .has_headers(true)
        .from_reader(bytes.as_slice());
    let csv_error = |e: csv::Error| {
        let line = e.position().map(|p| line_of(p.byte())).unwrap_or(1);
        match e.into_kind() {
            csv::ErrorKind::Io(source) => DataError::Io { path: path.to_owned(), source },
            csv::ErrorKind::Utf8 { err, .. } => bad_row(path, line, format!("invalid UTF-8: {err}")),
            kind => bad_row(path, line, format!("{kind:?}")),
        }
    };
    let headers = reader.headers().map_err(csv_error)?.clone();
    let column = |name: &str| {
        headers.iter().position(|h| h.trim() == name).ok_or_else(|| DataError::MissingColumn {
            path: path.to_owned(),
            line: 1,
            column: name.to_owned(),
            available: headers.iter().collect::<Vec<_>>().join(", "),
        })
    };
    let (text_at, label_at) = (column(columns.text)?, column(columns.label)?);
    let pair_at = columns.text_pair.map(column).transpose()?;
    let mut rows = Vec::new();
    let mut record = csv::StringRecord::new();
    while rows.len() < limit && reader.read_record(&mut record).map_err(csv_error)? {
        let line = record.position().map(|p| line_of(p.byte())).unwrap_or_default();
        if record.len() == 1 && record[0].trim().is_empty() {
            continue; // a blank line
        }
        if record.len() != headers.len() {
            return Err(bad_row(path, line, format!("{} fields, but the header has {}", record.len(), headers.len())));
        }
        let label = record[label_at].trim();
        if label.is_empty() {
            return Err(bad_row(path, line, format!("empty label in column {:?}", columns.label)));
        }
        let text_pair = pair_at.map(|at| record[at].to_owned());
        rows.push(RawRow { line, text: record[text_at].to_owned(), text_pair, label: label.to_owned() });
    }
    Ok(rows)
}

fn read_jsonl(path: &Path, columns: Columns<'_>, limit: usize) -> Result<Vec<RawRow>, DataError> {
    let reader = std::io::BufReader::new(open(path)?);
    let mut rows = Vec::new();
    for (index, line) in reader.lines().enumerate() {
        if rows.len() >= limit {
            break;
        }
        let number = index as u64 + 1;
        let line = line.map_err(|source| DataError::Io { path: path.to_owned(), source })?;
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value =
            serde_json::from_str(&line).map_err(|e| bad_row(path, number, format!("invalid JSON: {e}")))?;
        let object = value.as_object().ok_or_else(|| bad_row(path, number, "not a JSON object"))?;
        let field = |name: &str| {
            object.get(name).ok_or_else(|| DataError::MissingColumn {
                path: path.to_owned(),
                line: number,
                column: name.to_owned(),
                available: object.keys().cloned().collect::<Vec<_>>().join(", "),
            })
        };
        let text_of = |name: &str| match field(name)? {
            serde_json::Value::String(s) => Ok(s.clone()),
            other => Err(bad_row(path, number, format!("{name:?} is not a string: {other}"))),
        };
        let text = text_of(columns.text)?;
        let text_pair = columns.text_pair.map(text_of).transpose()?;
        let label_column = columns.label;
        let label = match field(label_column)? {
            serde_json::Value::String(s) if !s.trim().is_empty() => s.trim().to_owned(),
            serde_json::Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
            serde_json::Value::Bool(b) => b.to_string(),
            other => {
                return Err(bad_row(
                    path,
                    number,
                    format!("{label_column:?} must be an integer or a non-empty string, got {other}"),
                ))
            }
        };
        rows.push(RawRow { line: number, text, text_pair, label });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &tempfile::TempDir, name: &str, body: &str) -> std::path::PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, body).unwrap();
        path
    }

    #[test]
    fn tsv_keeps_quotes_and_skips_blank_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = file(&dir, "a.tsv", "sentence\tlabel\nit 's \"great\" \t1\n\nbad\t0\n");
        let rows = read_rows(&path, Columns::single("sentence", "label"), None).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].text, "it 's \"great\" ");
        assert_eq!((rows[1].line, rows[1].label.as_str()), (4, "0"));
    }

    #[test]
    fn csv_with_quotes_other_columns_and_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = file(&dir, "a.csv", "id,text,y\n1,\"hello, world\",pos\n2,bye,neg\n3,x,pos\n");
        let rows = read_rows(&path, Columns::single("text", "y"), Some(2)).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].text, "hello, world");
        assert_eq!(rows[1].label, "neg");
    }

    #[test]
    fn jsonl_integer_and_string_labels() {
        let dir = tempfile::tempdir().unwrap();
        let path = file(&dir, "a.jsonl", "{\"t\":\"a\",\"l\":1}\n{\"t\":\"b\",\"l\":\"x\"}\n");
        let rows = read_rows(&path, Columns::single("t", "l"), None).unwrap();
        assert_eq!(rows[0].label, "1");
        assert_eq!(rows[1].label, "x");
    }

    #[test]
    fn pairs_read_the_second_text_from_every_format() {
        let dir = tempfile::tempdir().unwrap();
        let pair = Columns { text: "sentence1", text_pair: Some("sentence2"), label: "label" };
        for (name, body) in [
            ("p.tsv", "label\tsentence1\tsentence2\n1\tA cat.\tA \"cat\" sat.\n"),
            ("p.csv", "sentence1,sentence2,label\nA cat.,\"A \"\"cat\"\" sat.\",1\n"),
            ("p.jsonl", "{\"sentence1\":\"A cat.\",\"sentence2\":\"A \\\"cat\\\" sat.\",\"label\":1}\n"),
        ] {
            let rows = read_rows(&file(&dir, name, body), pair, None).unwrap();
            assert_eq!(rows.len(), 1, "{name}");
            assert_eq!(
                (rows[0].text.as_str(), rows[0].text_pair.as_deref()),
                ("A cat.", Some("A \"cat\" sat.")),
                "{name}"
            );
            assert_eq!(rows[0].label, "1", "{name}");
            let single = read_rows(&file(&dir, name, body), Columns::single("sentence1", "label"), None).unwrap();
            assert_eq!(single[0].text_pair, None, "{name}");
        }
    }

    #[test]
    fn a_missing_pair_column_is_one_line_naming_file_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let pair = Columns { text: "question", text_pair: Some("sentence"), label: "label" };
        for (name, body, expected) in [
            ("q.tsv", "question\tlabel\nwho?\t0\n", "q.tsv:1: no column \"sentence\" (columns: question, label)"),
            ("q.csv", "question,label\nwho?,0\n", "q.csv:1: no column \"sentence\""),
            ("q.jsonl", "{\"question\":\"who?\",\"label\":0}\n", "q.jsonl:1: no column \"sentence\""),
            (
                "n.jsonl",
                "{\"question\":\"who?\",\"sentence\":3,\"label\":0}\n",
                "n.jsonl:1: \"sentence\" is not a string",
            ),
        ] {
            let err = read_rows(&file(&dir, name, body), pair, None).unwrap_err().to_string();
            assert!(err.contains(expected) && !err.contains('\n'), "{name}: {err}");
        }
    }

    #[test]
    fn errors_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            ("short.tsv", "sentence\tlabel\nok\t1\nno label here\n", ":3:"),
            ("empty_label.tsv", "sentence\tlabel\nok\t1\nfine\t \n", ":3: empty label"),
            ("nocol.tsv", "text\tlabel\nok\t1\n", ":1: no column \"sentence\""),
            ("bad.jsonl", "{\"sentence\":\"a\",\"label\":1}\n{oops\n", ":2: invalid JSON"),
            ("missing.jsonl", "{\"sentence\":\"a\",\"label\":1}\n{\"sentence\":\"b\"}\n", ":2: no column \"label\""),
            ("float.jsonl", "{\"sentence\":\"a\",\"label\":1.5}\n", ":1: \"label\" must be"),
            ("quote.csv", "sentence,label\n\"a,1\n", "quote.csv"),
        ];
        for (name, body, expected) in cases {
            let path = file(&dir, name, body);
            let err = read_rows(&path, Columns::single("sentence", "label"), None).unwrap_err().to_string();
            assert!(err.contains(name) && err.contains(expected), "{name}: {err}");
        }
        let err = read_rows(&dir.path().join("x.parquet"), Columns::single("s", "l"), None).unwrap_err().to_string();
        assert!(err.contains("unknown data format"), "{err}");
        let err = read_rows(&dir.path().join("gone.tsv"), Columns::single("s", "l"), None).unwrap_err().to_string();
        assert!(err.contains("gone.tsv"), "{err}");
    }
}
