#!/usr/bin/env python3
"""make_seeds.py: writes the seed corpora of tests/fuzz/corpus/<target>/ (run from anywhere; existing seeds
are overwritten, others left). Each seed starts with the control bytes its target reads (see fuzz_*.c)."""
import os

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, '..', 'data')


def write(target, name, data):
    d = os.path.join(HERE, 'corpus', target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    assert len(data) < 4096, (target, name)
    with open(os.path.join(d, name), 'wb') as f:
        f.write(data)


def head(path, nbytes):
    with open(path, 'rb') as f:
        b = f.read(nbytes)
    return b[:b.rfind(b'\n') + 1]


# ---- dataset: control byte = format (0 CSV, 1 TSV, 2 JSONL) | 4 if a column mapping comes first | (chunk-1) << 3
def ctl(fmt, chunk, cols=False):
    return bytes([fmt | (4 if cols else 0) | ((chunk - 1) << 3)])


write('dataset', 'csv_vocabulary', ctl(0, 7) + head(os.path.join(DATA, 'vocabulary_200.csv'), 1500))
write('dataset', 'csv_bad_rows', ctl(0, 3) + head(os.path.join(DATA, 'bad_rows.csv'), 3000))
write('dataset', 'csv_quoted', ctl(0, 1) + b'position,term,type,note\r\n1,"a ""quoted"" term",noun,"multi\r\nline"\r\n'
      b'2,  spaced  ,,x\r\n\r\n3,"unterminated,noun,x\n')
write('dataset', 'csv_bom', ctl(0, 1) + b'\xef\xbb\xbfposition,term,type\n1,\xec\x82\xac\xea\xb3\xbc,noun\n')
write('dataset', 'csv_bom_chunk2', ctl(0, 2) + b'\xef\xbb\xbfposition,term\n1,x\n')
write('dataset', 'csv_dup_range', ctl(0, 5) + b'position,term\n1,a\n1,b\n0,c\n100000001,d\n99999999,e\n-3,f\n 7 ,g\n')
write('dataset', 'csv_fields', ctl(0, 4) + b'position,term,type\n1,a\n2,b,c,d\n3,"x"y,z\n4,a\x00b,c\n5,\xff,c\n')
write('dataset', 'csv_columns', ctl(0, 6, True) + b'position=Nr, term = Hangul ,type=\n'
      b'Nr,Hangul,Word_Type\n1,\xeb\x82\xb4\xea\xb0\x80,pronoun\n')
write('dataset', 'columns_bad', ctl(0, 1, True) + b'position=a,term=a\nposition,term\n1,x\n')
write('dataset', 'columns_unknown', ctl(0, 1, True) + b'pos=a\n')
write('dataset', 'csv_missing_column', ctl(0, 9) + b'pos,term\n1,a\n')
write('dataset', 'csv_empty', ctl(0, 1))
write('dataset', 'csv_header_only', ctl(0, 1) + b'position,term\r\n')
write('dataset', 'tsv_escapes', ctl(1, 3) + b'position\tterm\ttype\textra\n1\ta\\tb\tnoun\tline\\nbreak\\\\\n'
      b'2\tc\t\t\\r\n3\td\n\n4\t \te\tf\n')
write('dataset', 'tsv_crlf', ctl(1, 1) + b'position\tterm\r\n1\t\xec\x82\xac\r\n2\tb\r\n')
write('dataset', 'jsonl_basic', ctl(2, 5) + b'{"position":1,"term":"\xec\x82\xac\xea\xb3\xbc","type":"noun","extra":{"a":[1,2]}}\n'
      b'{"position":"2","term":"b","n":null,"b":true,"d":1.5}\n\n{"position":3}\n{"term":"x"}\n[1]\n{bad json\n'
      b'{"position":4,"term":"a\\u0000b"}\n{"position":5,"term":{"x":1}}\n{"position":6,"term":"\\ud800"}\n')
write('dataset', 'jsonl_crlf_bom', ctl(2, 2) + b'\xef\xbb\xbf{"position":1,"term":"a"}\r\n{"position":2,"term":"b"}')
write('dataset', 'jsonl_columns', ctl(2, 8, True) + b'position=id,term=word,type=\n{"id":1,"word":"x","type":"t"}\n')
write('dataset', 'jsonl_deep', ctl(2, 32) + b'{"position":1,"term":"a","x":' + b'[' * 40 + b']' * 40 + b'}\n')

# ---- message: the body as it is
S = '{"schema":1,"job_id":"job-1","batch":0,"attempt":1,"items":[%s]}'
write('message', 'batch_one', S % '{"position":1,"term":"사과","type":"noun"}')
write('message', 'batch_extra', S % ('{"position":1,"term":"a","type":"","extra":{"Hanja":"沙果","n":"1"}},'
                                      '{"position":2,"term":"b","type":"v","last_error":"HTTP 500: boom"}'))
write('message', 'batch_retry', '{"schema":1,"job_id":"J.2_x","batch":1099511627776,"attempt":3,"not_before":1767225600000,'
      '"items":[{"position":1000000000000,"term":"\\u00e9\\n\\t\\"","type":null}]}')
write('message', 'batch_extra_types', S % '{"position":3,"term":"t","extra":{"o":{"a":[1,2.5,true,null]},"s":"x","z":null}}')
write('message', 'bad_schema', '{"schema":2,"job_id":"j","batch":0,"attempt":1,"items":[]}')
write('message', 'bad_job', S.replace('job-1', 'unrouted') % '{"position":1,"term":"a"}')
write('message', 'bad_items', S % '{"position":0,"term":"a"},{"position":2}')
write('message', 'bad_empty_items', S % '')
write('message', 'bad_trailing', S % '{"position":1,"term":"a"}' + ' x')
write('message', 'bad_nul_term', S % '{"position":1,"term":"a\\u0000b"}')
write('message', 'salvage_only', '{"job_id":"j1","items":[{"position":5,"term":"x"},{"position":"6"},7]}')
write('message', 'not_json', 'schema=1')
write('message', 'deep', '[' * 40 + ']' * 40)

# ---- pipeline: selector (0 envelope, 1 error body, 2 fence, 3 stage 1, 4 stage 2), reason buffer size, bytes
S1 = ('{"term_number":7,"term":"사과","ipa":"/sa.ɡwa/","pos":"noun","primary_meaning":"apple",'
      '"other_meanings":["apology"],"metaphor":"a SAW GUArding an apple","metaphor_noun":"saw",'
      '"metaphor_action":"guards","suggested_location":"kitchen","anchor_object":"fruit bowl",'
      '"anchor_sensory":"crunch","explanation":"sa-gwa","comparison":{"similar_term":"배","difference":"pear"},'
      '"usage_context":"food","korean_keywords":["과일","사과"]}')
HDR = 'position\tterm\tterm_number\ttab_name\tprimer\tfront\tback\ttags\thonorific_level'
R1 = '7\t사과\t7\tScene\tkitchen\tWhat is 사과?\tapple\tfruit::scene\tpolite'
R2 = '7\t사과\t7\tUsage\t배\tHow?\tan apple \\t note\tfruit'
import json


def pl(sel, body, why=255):
    return bytes([sel, why]) + (body.encode() if isinstance(body, str) else body)


def env(content, usage='{"prompt_tokens":120,"completion_tokens":45}'):
    return ('{"id":"c-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant",'
            '"content":%s},"finish_reason":"stop"}],"usage":%s}' % (json.dumps(content, ensure_ascii=False), usage))


write('pipeline', 'env_stage1', pl(0, env('```json\n' + S1 + '\n```')))
write('pipeline', 'env_stage2', pl(0, env(HDR + '\n' + R1 + '\n' + R2 + '\n')))
write('pipeline', 'env_nul', pl(0, env('a\u0000b')))
write('pipeline', 'env_usage_odd', pl(0, env('x', '{"prompt_tokens":-5,"completion_tokens":1e30}')))
write('pipeline', 'env_no_choices', pl(0, '{"choices":[]}'))
write('pipeline', 'env_literal', pl(0, '12'))
write('pipeline', 'err_openai', pl(1, '{"error":{"message":"Rate limit reached\\nfor model","type":"requests","code":null}}'))
write('pipeline', 'err_string', pl(1, '{"error":"overloaded"}', 16))
write('pipeline', 'err_html', pl(1, '<html>\r\n<body>502 Bad Gateway</body></html>' + ' ' * 300 + 'é' * 20))
write('pipeline', 'err_cut_utf8', pl(1, '가' * 120, 100))
write('pipeline', 'err_empty', pl(1, '', 1))
write('pipeline', 'fence_json', pl(2, '  ```json \r\n{"a":1}\n```  \n'))
write('pipeline', 'fence_open_only', pl(2, '```tsv\n' + HDR))
write('pipeline', 'fence_short', pl(2, '``'))
write('pipeline', 'stage1_bare', pl(3, S1))
write('pipeline', 'stage1_fenced', pl(3, '```json\n' + S1 + '\n```'))
write('pipeline', 'stage1_missing', pl(3, '{"term":"x"}'))
write('pipeline', 'stage1_null_field', pl(3, S1.replace('"ipa":"/sa.ɡwa/"', '"ipa":null')))
write('pipeline', 'stage1_bad_utf8', pl(3, b'{"term":"\xed\xa0\x80"}'))
write('pipeline', 'stage1_numbers', pl(3, S1.replace('"term_number":7', '"term_number":1e400,"n":-0.0,"big":99999999999999999999')))
write('pipeline', 'stage2_tsv', pl(4, HDR + '\n' + R1 + '\n' + R2 + '\n'))
write('pipeline', 'stage2_crlf_fenced', pl(4, '```tsv\r\n' + HDR + '\r\n' + R1 + '\r\n```\r\n'))
write('pipeline', 'stage2_short_lines', pl(4, 'a\tb\n\n' + R1 + '\textra\tmore\n'))
write('pipeline', 'stage2_no_cards', pl(4, HDR + '\n'))

# ---- config: selector (0 duration, 1 RATE_LIMITS, 2 producer, 3 worker, 4 admin command line), text
for i, d in enumerate(['500ms', '30s', '2m', '1h', '1d', '1.5', '0', '1e3ms', '-1s', '9e18d', 'inf', 'nan', '5x',
                       ' 7s', '0x10s', '']):
    write('config', 'duration_%02d' % i, b'\x00' + d.encode())
for i, l in enumerate(['openrouter=600/min,burst=20;tokens=200000/min local=5/s groq=0/h',
                       'a=1/s', 'a=1/sec;tokens=5/min,burst=10', 'a=60/min,burst=1e12', 'a=100/h;tokens=1/h,burst=1e12',
                       'bad name=1/s', 'a=1/minute', 'a=1', '=1/s', 'a=-1/s', ' ',
                       ' '.join('api%d=%d/s' % (k, k + 1) for k in range(20))]):
    write('config', 'limits_%02d' % i, b'\x01' + l.encode())
write('config', 'producer_flags', b'\x02--batch-size\nauto\n--retry-delays=1s,2s,3s\n--timeout=5m\n--batch-max-bytes=2048\ndata.csv')
write('config', 'producer_bad_batch', b'\x02--batch-size=0')
write('config', 'producer_delays_many', b'\x02--retry-delays=1s,1s,1s,1s,1s,1s,1s,1s,1s')
write('config', 'worker_flags', b'\x03--worker-count=8\n--prefetch=0\n--max-attempts=3\n--heartbeat=0\n--api-timeout=30s\n'
      b'--temperature=0.2\n--max-tokens=100\n--rate-limits=openrouter=600/min,burst=20\n--rate-limit=0\n--token-limit=100000')
write('config', 'worker_bad_number', b'\x03--max-tokens=1.5')
write('config', 'worker_bad_limits', b'\x03--rate-limit=1\n--rate-burst=1000000000')
write('config', 'worker_api_url', b'\x03--api-base-url=http://127.0.0.1:9/v1\n--api-name=x\n--metrics-port=65535')
write('config', 'worker_secret_flag', b'\x03--redis-url=redis://:pw@127.0.0.1')
write('config', 'worker_unknown', b'\x03--nope=1\npositional\n--\nb\nc\nd\ne')
write('config', 'admin_flags', b'\x04--rabbitmq-management-url=http://127.0.0.1:15672\n--limit=5\n--rate=0.5\n--json')
write('config', 'admin_bad_mgmt', b'\x04--rabbitmq-management-url=ftp://x')
write('config', 'worker_sentinels', b'\x03--redis-sentinels=127.0.0.1:26379, [::1]:26380\n--queue-prefix=a.b-c_d')

# ---- url: selector (bits 0-2: 0-3 URL as is, 4-7 user/password/rest with scheme amqp, amqps, redis, http;
# bits 3-7: size of the redaction buffer), text
for i, u in enumerate(['amqp://guest:guest@127.0.0.1:5672/%2f', 'amqps://u:p@broker.example:5671/vh',
                       'amqp://a:b@h1:5672/%2f,amqp://a:b@h2:5673/%2f', 'amqp://', 'amqp://[::1]:5672/',
                       'redis://127.0.0.1:6379/0', 'redis://:secret@h:1/15', 'redis://user:p@ss@h/3',
                       'redis://h:99999/', 'redis://h/16', 'http://u:p%40w@127.0.0.1:15672/api?x=1#f',
                       'https://[::1]/', 'not a url', '127.0.0.1:26379,[::1]:26380', 'h:1, h:2 ,h:3']):
    write('url', 'plain_%02d' % i, bytes([((i * 3) % 32) << 3 | (i % 4)]) + u.encode())
for i, (sch, parts) in enumerate([(4, 'guest\nguest-pass\n127.0.0.1:5672/%2f'), (5, 'u\nS3cr%40t!\nbroker:5671/v'),
                                  (6, '\nredispass\nh:6379/2'), (6, 'acl\np:w@x\nh'), (7, 'admin\nhunter22\n127.0.0.1:15672/'),
                                  (4, 'u:x\nsecretpw\nh'), (6, 'user\nlong%2Fpassword\n[::1]:6379/0')]):
    write('url', 'secret_%02d' % i, bytes([(31 - i * 4) << 3 | sch]) + parts.encode())

# ---- retry_after: the header's value
for i, v in enumerate(['120', '0', ' 7 ', '1.5', '86401', '99999999999999999999999', '9223372036854775807',
                       'Wed, 21 Oct 2015 07:28:00 GMT', 'Thu, 01 Jan 2026 00:01:00 GMT', 'Sat, 01 Jan 2028 00:00:00 GMT',
                       'Sunday, 06-Nov-94 08:49:37 GMT', 'Sun Nov  6 08:49:37 1994', '-5', '', '\t', '5s', 'soon',
                       '1\x002']):
    write('retry_after', 'value_%02d' % i, v)
