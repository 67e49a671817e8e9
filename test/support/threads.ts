import fs from 'node:fs';

/** The nice value of each thread of a process (field 19 of /proc/PID/task/TID/stat): the main thread's and all. */
export function threadNices(pid: number): { main: number; all: number[] } {
  const nice = (tid: string) => {
    const st = fs.readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
    return Number(st.slice(st.lastIndexOf(')') + 2).split(' ')[16]);
  };
  return { main: nice(String(pid)), all: fs.readdirSync(`/proc/${pid}/task`).map(nice) };
}
