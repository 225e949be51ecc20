"""Hostile input lines: each gets the behaviour documented in
docs/reliability.md ("Untrusted input"), asserted exactly: the dead-letter
reason and detail, or the output. Processing always goes on."""
import os
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from eddytest import EDDY, TEST_AGENT, EddyTest, read_jsonl  # noqa: E402


class Hostile(EddyTest):
    def run_lines(self, lines, *args):
        """Run the test agent (echo: outputs {seq, key}) over raw lines."""
        res = self.run_eddy(None, "--quiet", *args, input_text=b"\n".join(lines) + b"\n")
        self.assertOk(res)
        return res.outputs(), res.dead()

    def one_bad(self, line, reason, detail=None, *args):
        outs, dead = self.run_lines([line, b'{"key":"after","seq":99}'], *args)
        self.assertEqual(outs, [{"seq": 99, "key": "after"}])  # the next line goes on
        self.assertEqual(len(dead), 1, dead)
        d = dead[0]
        self.assertEqual((d["line"], d["reason"]), (1, reason))
        if detail is not None:
            self.assertEqual(d.get("detail"), detail)
        return d

    def one_good(self, line):
        outs, dead = self.run_lines([line])
        self.assertEqual(dead, [])
        self.assertEqual(len(outs), 1)
        return outs[0]

    # ------------------------------------------------------------ limits

    def test_line_over_max_line_bytes(self):
        line = b'{"key":"a","seq":1,"pad":"' + b"x" * 5000 + b'"}'
        d = self.one_bad(line, "line too long", "line of 5028 bytes, over --max-line-bytes 1024; raw keeps the first "
                         "4096 of 5028 bytes",
                         "--max-line-bytes", "1024")
        self.assertEqual(d["raw"].encode(), line[:4096])  # raw keeps the first 4 KiB

    def test_line_at_max_line_bytes_is_accepted(self):
        line = b'{"key":"a","seq":1,"pad":"'
        line += b"x" * (1024 - len(line) - 2) + b'"}'
        self.assertEqual(len(line), 1024)
        outs, dead = self.run_lines([line], "--max-line-bytes", "1024")
        self.assertEqual((outs, dead), ([{"seq": 1, "key": "a"}], []))

    def test_huge_line_is_not_buffered(self):
        # 40 MB without a newline at the default limit (16 MiB).
        line = b'{"key":"a","pad":"' + b"y" * (40 << 20) + b'"}'
        self.one_bad(line, "line too long", "line of %d bytes, over --max-line-bytes 16777216; "
                     "raw keeps the first 4096 of %d bytes" % (len(line), len(line)))

    def test_max_line_bytes_range(self):
        # 18446744073709551615 was accepted, and the reader's limit plus one
        # byte for a '\r' wrapped to 0: every line that spanned two reads
        # (a 256 KiB chunk, a pipe's partial write) was "line too long".
        # The range now ends at 1 TiB.
        for bad in ("18446744073709551615", "1099511627777"):
            res = self.run_eddy([{"key": "a", "seq": 1}], "--max-line-bytes", bad)
            self.assertEqual(res.rc, 2, res.stderr)
            self.assertIn(b"invalid value '%s' for option 'max-line-bytes': expected a whole "
                          b"number from 1024 to 1099511627776" % bad.encode(), res.stderr)
        # At the largest value, a line over a chunk's end and one that a
        # pipe delivers in two reads are lines as any other.
        pad = "x" * (300 << 10)
        recs = [{"key": "a", "seq": 1, "pad": pad}, {"key": "b", "seq": 2, "pad": pad}]
        res = self.run_eddy(recs, "--quiet", "--max-line-bytes", "1099511627776")
        self.assertOk(res)
        self.assertEqual((res.outputs(), res.dead()),
                         ([{"seq": 1, "key": "a"}, {"seq": 2, "key": "b"}], []))
        out = self.path("pipe.jsonl")
        p = subprocess.Popen([EDDY, "run", TEST_AGENT, "--output", out, "--quiet",
                              "--max-line-bytes", "1099511627776"],
                             stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        p.stdin.write(b'{"key":"a",')
        p.stdin.flush()
        time.sleep(0.3)
        p.stdin.write(b'"op":"echo","seq":1}\n')
        p.stdin.close()
        self.assertEqual(p.wait(timeout=30), 0, p.stderr.read())
        p.stderr.close()
        self.assertEqual(read_jsonl(out), [{"seq": 1, "key": "a"}])
        self.assertFalse(os.path.exists(out + ".dead.jsonl"))

    def test_nesting_too_deep(self):
        line = b'{"key":"b","d":' + b"[" * 64 + b"]" * 64 + b"}"  # 65 levels
        self.one_bad(line, "nesting too deep", "nesting deeper than 64")
        ok = b'{"key":"b","seq":2,"d":' + b"[" * 63 + b"]" * 63 + b"}"  # 64 levels
        self.assertEqual(self.one_good(ok), {"seq": 2, "key": "b"})

    def test_max_depth_option(self):
        self.one_bad(b'{"key":"b","d":[[1]]}', "nesting too deep", "nesting deeper than 2",
                     "--max-depth", "2")

    def test_brackets_in_strings_do_not_count(self):
        line = b'{"key":"b","seq":3,"s":"' + b"[" * 500 + b'"}'
        self.assertEqual(self.one_good(line), {"seq": 3, "key": "b"})

    # ------------------------------------------------------------ bytes

    def test_invalid_utf8(self):
        line = b'{"key":"c","s":"\xff\xfe"}'
        d = self.one_bad(line, "not JSON", "unable to decode byte 0xff near '\"' (column 16)")
        self.assertNotIn("raw", d)
        self.assertEqual(bytes.fromhex(d["raw_hex"]), line)

    def test_raw_nul_byte(self):
        line = b'{"key":"d","s":"a\x00b"}'
        d = self.one_bad(line, "not JSON", "control character 0x0 near '\"a' (column 17)")
        self.assertEqual(d["raw"].encode(), line)  # JSON strings may hold \u0000

    def test_escaped_nul_in_string(self):
        self.one_bad(b'{"key":"e","s":"a\\u0000b"}', "not JSON",
                     "\\u0000 is not allowed without JSON_ALLOW_NUL near '\"a\\u0000b\"' "
                     "(column 25)")

    def test_byte_order_mark(self):
        # Before the input's first line (editors on Windows save one): not
        # part of the JSON, skipped. Anywhere else: a character that makes
        # the line not JSON.
        self.assertEqual(self.one_good(b'\xef\xbb\xbf{"key":"f","seq":1}'), {"seq": 1, "key": "f"})
        outs, dead = self.run_lines([b'{"key":"e","seq":1}', b'\xef\xbb\xbf{"key":"f"}'])
        self.assertEqual(outs, [{"seq": 1, "key": "e"}])
        self.assertEqual([(d["line"], d["reason"]) for d in dead], [(2, "not JSON")])
        # The file such an editor saves: one line, no newline. With --state
        # a last line is read only once it is complete JSON (the mark aside).
        res = self.run_eddy(None, "--state", self.path("st"),
                            input_text=b'\xef\xbb\xbf{"key":"g","seq":2}')
        self.assertOk(res)
        self.assertEqual(res.outputs(), [{"seq": 2, "key": "g"}])

    def test_trailing_garbage(self):
        self.one_bad(b'{"key":"f"} x', "not JSON")

    def test_crlf_line_end_is_stripped(self):
        self.assertEqual(self.one_good(b'{"key":"f","seq":4}\r'), {"seq": 4, "key": "f"})

    # ------------------------------------------------------------ values

    def test_duplicate_keys_last_wins(self):
        self.assertEqual(self.one_good(b'{"key":"f","key":"g","seq":7,"seq":8}'),
                         {"seq": 8, "key": "g"})

    def test_integer_over_int64(self):
        self.one_bad(b'{"key":"h","n":123456789012345678901234567890}', "not JSON",
                     "too big integer (column 45)")

    def test_int64_bounds_are_accepted(self):
        out = self.one_good(b'{"key":-9223372036854775808,"seq":9223372036854775807}')
        self.assertEqual(out, {"seq": 9223372036854775807, "key": -9223372036854775808})

    def test_huge_real(self):
        self.one_bad(b'{"key":"i","n":1e400}', "not JSON", "real number overflow near '1e400' "
                     "(column 20)")

    def test_tiny_real_underflows_to_zero(self):
        # Not an error: strtod gives 0 (or a denormal) and jansson keeps it.
        self.assertEqual(self.one_good(b'{"key":"i","seq":5,"n":1e-400}'),
                         {"seq": 5, "key": "i"})

    # ------------------------------------------------------------ keys

    def test_key_object(self):
        self.one_bad(b'{"key":{"a":1}}', "key is not a scalar", 'field "key" is an object')

    def test_key_array(self):
        self.one_bad(b'{"key":[1]}', "key is not a scalar", 'field "key" is an array')

    def test_key_null(self):
        # The key's field is named, as for the other key reasons.
        self.one_bad(b'{"key":null}', "key is null", 'field "key" is null')

    def test_no_key(self):
        self.one_bad(b'{"other":1}', "no key field", 'no field "key"')

    def test_not_an_object(self):
        self.one_bad(b'[{"key":1}]', "not a JSON object")
        self.one_bad(b'"key"', "not a JSON object")

    def test_empty_string_key_is_a_key(self):
        outs, dead = self.run_lines([b'{"key":"","seq":1}', b'{"key":"","seq":2}'])
        self.assertEqual((outs, dead), ([{"seq": 1, "key": ""}, {"seq": 2, "key": ""}], []))

    def test_float_key(self):
        # A real key is its JSON text: 1.5 and "1.5" and 1 and 1.0 are four keys.
        outs, dead = self.run_lines([b'{"key":1.5,"seq":1}', b'{"key":"1.5","seq":2}',
                                     b'{"key":1,"seq":3}', b'{"key":1.0,"seq":4}'])
        self.assertEqual(dead, [])
        self.assertEqual([(o["seq"], o["key"]) for o in outs],
                         [(1, 1.5), (2, "1.5"), (3, 1), (4, 1.0)])
        self.assertIsInstance(outs[3]["key"], float)

    def test_boolean_key(self):
        outs, dead = self.run_lines([b'{"key":true,"seq":1}', b'{"key":false,"seq":2}'])
        self.assertEqual((outs, dead), ([{"seq": 1, "key": True}, {"seq": 2, "key": False}], []))

    def test_huge_integer_key(self):
        self.one_bad(b'{"key":99999999999999999999}', "not JSON",
                     "too big integer near '99999999999999999999' (column 27)")

    def test_unicode_key(self):
        self.assertEqual(self.one_good('{"key":"\\u00e9\u00e8","seq":1}'.encode()),
                         {"seq": 1, "key": "\u00e9\u00e8"})


if __name__ == "__main__":
    unittest.main(verbosity=2)
