// Score a cache-tests results file the way cache-tests.fyi counts it: required tests (kind
// "required" or unset, not browser-only) that pass, with dependencies honoured. Exits 1 when
// fewer pass than MIN_REQUIRED, or fewer CDN-Cache-Control ones than MIN_CDN.
//
//   node cache-tests-score.mjs SUITE_DIR results.json [MIN_REQUIRED [MIN_CDN]]
//
// SUITE_DIR is a git checkout (engine under test-engine/) or the npm package (engine at the top).
import { existsSync, readFileSync } from 'node:fs'
import { pathToFileURL } from 'node:url'
import path from 'node:path'

const [suiteDir, resultsFile, minRequired = '0', minCdn = '0'] = process.argv.slice(2)
const suite = (await import(pathToFileURL(path.join(suiteDir, 'tests/index.mjs')))).default
const checkout = path.join(suiteDir, 'test-engine/lib/results.mjs')
const { determineTestResult } = existsSync(checkout)
  ? await import(pathToFileURL(checkout))
  : await import(pathToFileURL(path.join(suiteDir, 'lib/display.mjs')))
// both versions describe a result as [icon, colour, symbol]; a pass is the check mark
const PASS = '\u2705'
const results = JSON.parse(readFileSync(resultsFile, 'utf8'))

let total = 0
let passed = 0
let cdnTotal = 0
let cdnPassed = 0
const failures = []
for (const s of suite) {
  for (const t of s.tests) {
    if (t.browser_only) continue
    if (t.kind !== undefined && t.kind !== 'required') continue
    const r = determineTestResult(suite, t.id, results)
    const ok = r[2] === PASS
    total++
    if (ok) passed++
    if (s.id === 'cdn-cache-control') {
      cdnTotal++
      if (ok) cdnPassed++
    }
    if (!ok) {
      const detail = Array.isArray(results[t.id]) ? results[t.id].join(': ') : ''
      failures.push(`  ${r[2]} ${t.id} - ${detail}`)
    }
  }
}
console.log(`required: ${passed} / ${total} passed; CDN-Cache-Control required: ${cdnPassed} / ${cdnTotal}`)
if (failures.length) console.log('failing required tests:\n' + failures.join('\n'))
const short = []
if (passed < Number(minRequired)) short.push(`required ${passed} < ${minRequired}`)
if (cdnPassed < Number(minCdn)) short.push(`CDN-Cache-Control ${cdnPassed} < ${minCdn}`)
if (short.length) {
  console.log(`BELOW THE THRESHOLD: ${short.join(', ')}`)
  process.exit(1)
}
