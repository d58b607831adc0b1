// One entry point to start any of the three MTAs for a run.
import { HarakaProcess, PostfixProcess, type MtaName, type RunningMta, type StartOptions } from "./mta.js"
import { PosternProcess, type PosternStartOptions } from "./postern.js"

export const startMta = (name: MtaName, opts: StartOptions & PosternStartOptions): Promise<RunningMta> => {
  switch (name) {
    case "postern":
      return PosternProcess.start(opts)
    case "postfix":
      return PostfixProcess.start(opts)
    case "haraka":
      return HarakaProcess.start(opts)
  }
}
