// Score a cache-tests results file the way cache-tests.fyi counts it: required tests (kind
// "required" or unset, not browser-only) that pass, with dependencies honoured.
//
//   node cache-tests-score.mjs SUITE_DIR results.json
import { readFileSync } from 'node:fs'
import { pathToFileURL } from 'node:url'
import path from 'node:path'

const [suiteDir, resultsFile] = process.argv.slice(2)
const suite = (await import(pathToFileURL(path.join(suiteDir, 'tests/index.mjs')))).default
const { determineTestResult, resultTypes } =
  await import(pathToFileURL(path.join(suiteDir, 'test-engine/lib/results.mjs')))
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
    const ok = r === resultTypes.pass
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
