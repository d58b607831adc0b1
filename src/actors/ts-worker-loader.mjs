// Loads a TypeScript worker through tsx when Postern runs from its sources (the test runner); the built
// JavaScript in dist/ never needs this file. workerData.entry names the worker module to load.
import { workerData } from "node:worker_threads"
import { register } from "tsx/esm/api"

register()
await import(workerData.entry)
