// An HTTP/2 client over TLS on one session, many streams in flight:
//   node h2client.js PORT PREFIX N   then, for each line read on stdin, N more requests on the
//   same session with paths PREFIX<line>/<i>; prints "done <k>" after each batch; exits at EOF.
const http2 = require('http2'), readline = require('readline');
const [port, prefix, n] = process.argv.slice(2);
const session = http2.connect(`https://127.0.0.1:${port}`, {rejectUnauthorized: false});
function batch(tag) {
  return Promise.all([...Array(+n).keys()].map(i => new Promise((resolve, reject) => {
    const body = JSON.stringify({tag, i});
    const req = session.request({':method': 'POST', ':path': `${prefix}${tag}/${i}`,
                                 'content-type': 'application/json', 'x-request-id': `${tag}-${i}-${Date.now()}`});
    let got = '';
    req.on('data', d => got += d);
    req.on('end', () => resolve(got));
    req.on('error', reject);
    req.end(body);
  })));
}
(async () => {
  await batch('first');
  console.log('done first');
  const rl = readline.createInterface({input: process.stdin});
  for await (const line of rl) {
    await batch(line.trim());
    console.log(`done ${line.trim()}`);
  }
  session.close();
})().catch(e => { console.error(e); process.exit(1); });
