#!/usr/bin/env node
/**
 * netbootd command line. Thin: every command is a call into the library.
 */
import './threadpool.js';
import { Command } from 'commander';
import { registerImageCommands } from './inspect.js';
import { registerPrepCommand } from './prep.js';
import { registerFsCommands } from './fs.js';
import { registerServeCommands } from './serve.js';

const program = new Command();
program
  .name('netbootd')
  .description('Network-boot PCs and Raspberry Pis from disk images: proxy DHCP, TFTP and NBD in one daemon')
  .version('0.1.0');
registerImageCommands(program);
registerPrepCommand(program);
registerFsCommands(program);
registerServeCommands(program);

program.parseAsync(process.argv).catch((e: unknown) => {
  process.stderr.write(`netbootd: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exitCode = 1;
});
