/** `netbootd ls` / `netbootd cat`: look inside disk images without mounting them. */
import type { Command } from 'commander';

export function registerImageCommands(program: Command): void {
  program
    .command('ls')
    .description('list the partitions of IMAGE, or a FAT directory: IMAGE PART[:/dir]')
    .argument('<image>')
    .argument('[where]')
    .action(async () => {
      throw new Error('not implemented yet');
    });
}
